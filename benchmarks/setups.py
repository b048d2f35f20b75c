"""Building what the suites compare: fused artifacts, runners and plain sessions."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

from popfuse import fusion
from popfuse.runtime import Runner, RuntimeConfig

from .models import Workload


def build_fused(workloads: Sequence[Workload], folder: Path) -> fusion.BuildResult:
    """Fuse ``workloads`` (subgraph i = workload i) into ``folder``; a repeated name gets ``_<i>``."""
    folder.mkdir(parents=True, exist_ok=True)
    names = [w.name if w.name not in [x.name for x in workloads[:i]] else f"{w.name}_{i}"
             for i, w in enumerate(workloads)]
    return fusion.build(
        {
            "output_dir": str(folder),
            "model_fusion": [{"input_model": str(w.path), "name": n} for w, n in zip(workloads, names)],
        }
    )


def fused_feeds(fused: Runner, index: int, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A request for subgraph ``index`` under its anchors, from the model's own input names."""
    sub = fused.subgraphs[index]
    return {sub.anchor(k): v for k, v in feeds.items()}


def session(model: Path | str | bytes, threads: int) -> ort.InferenceSession:
    """A plain onnxruntime session of a model file (or its bytes), as a user without popfuse would make it."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    return ort.InferenceSession(model if isinstance(model, bytes) else str(model), options,
                                providers=["CPUExecutionProvider"])


def runner(popef: Path | str, threads: int) -> Runner:
    """A fused runner set up as PopRT's example sets it up."""
    return Runner(popef, RuntimeConfig(validate_io_params=False, intra_op_num_threads=threads))
