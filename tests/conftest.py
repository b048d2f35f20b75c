"""Shared fixtures: building artifacts from small models into a temporary folder."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import onnx
import pytest

from fusion import ModelOptions, compile_artifact, fuse
from runtime.artifact import write_artifact


@pytest.fixture
def make_artifact(tmp_path: Path):
    """Fuse models, compile them for the CPU and write ``executable.popef``; returns its path."""

    def make(
        models: Sequence[onnx.ModelProto],
        options: Sequence[ModelOptions] | None = None,
        name: str = "executable.popef",
    ) -> Path:
        fused = fuse(models, options)
        path = tmp_path / name
        write_artifact(path, compile_artifact(fused, "onnxruntime-cpu"))
        return path

    return make
