"""Shared fixtures: artifacts built from small models per test, and the real PP-OCR artifact once per session."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import pytest

from popfuse.benchmarks import ocr
from popfuse.fusion import BuildResult, ModelOptions, build, compile_artifact, fuse_models
from popfuse.runtime.artifact import write_artifact
from tests.models import PPOCR, ppocr_path


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # The ray tests share one local Ray cluster per session; test processes of their own (pytest-xdist's, the
    # default here) would each start one on the same machine. They run in one process: .ci/run's ray step.
    if os.environ.get("PYTEST_XDIST_WORKER"):
        if os.environ.get("POPFUSE_REQUIRE_RAY") and any(item.get_closest_marker("ray") for item in items):
            raise pytest.UsageError("POPFUSE_REQUIRE_RAY runs the ray tests, which need one process: add -n 0")
        skip = pytest.mark.skip(reason="the ray tests share one Ray cluster: run them in one process, "
                                       "pytest -n 0 -m ray (as .ci/run does)")
        for item in items:
            if item.get_closest_marker("ray"):
                item.add_marker(skip)

@pytest.fixture(scope="session", autouse=True)
def executable_cache(tmp_path_factory) -> Path:
    """The executable cache of every Runner the suite opens, in this process and in those it starts: a folder
    of the session's own, never the user's."""
    folder = tmp_path_factory.mktemp("executable-cache")
    os.environ["POPFUSE_CACHE_DIR"] = str(folder)
    return folder


@pytest.fixture
def make_artifact(tmp_path: Path):
    """Fuse models, compile them for the CPU and write ``executable.popef``; returns its path."""

    def make(
        models: Sequence[onnx.ModelProto],
        options: Sequence[ModelOptions] | None = None,
        name: str = "executable.popef",
    ) -> Path:
        fused = fuse_models(models, options)
        path = tmp_path / name
        write_artifact(path, compile_artifact(fused, "onnxruntime-cpu"))
        return path

    return make


def ppocr_config(output_dir: Path) -> dict:
    """The YAML build of PP-OCR det, rec and cls (subgraphs 0, 1, 2), as a mapping."""
    return {
        "output_dir": str(output_dir),
        "ipu_version": "ipu21",
        "model_fusion": [{"input_model": str(ppocr_path(n)), "name": n} for n in PPOCR],
    }


@pytest.fixture(scope="session")
def ppocr_build(tmp_path_factory) -> BuildResult:
    """The PP-OCR fusion, built once for the whole session (read it, never write to it)."""
    return build(ppocr_config(tmp_path_factory.mktemp("ppocr")))


@pytest.fixture(scope="session")
def ppocr_fp16_build(tmp_path_factory) -> tuple[BuildResult, list[str]]:
    """The PP-OCR fusion with ``precision: fp16``, built once for the whole session, and its progress lines.

    The detector is calibrated on a rendered page (a ``calibration`` .npz) that the tests never evaluate
    on; the recogniser and the classifier use the generated request.
    """
    folder = tmp_path_factory.mktemp("ppocr_fp16")
    np.savez(folder / "det.npz", x=ocr.det_page(128, 320, lines=("Calibration page", "other words 42")))
    config = ppocr_config(folder)
    config["precision"] = "fp16"
    config["model_fusion"][0]["calibration"] = str(folder / "det.npz")
    lines: list[str] = []
    return build(config, progress=lines.append), lines


@pytest.fixture
def tiny_disk(tmp_path):
    """A 64 KB tmpfs: a real ENOSPC (needs root, as the CI machine runs)."""
    folder = tmp_path / "disk"
    folder.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (not root)")
    yield folder
    subprocess.run(["umount", str(folder)], check=True)
