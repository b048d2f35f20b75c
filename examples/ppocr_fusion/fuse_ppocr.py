"""Fuse PaddleOCR's PP-OCRv4 detector and recogniser and the PP-OCR direction classifier.

The three models ship inside the ``rapidocr-onnxruntime`` wheel; all three name
their input ``x``. The script fuses them into one artifact, runs every subgraph
and checks it against plain onnxruntime on the source model.

    pip install -e '.[examples]'    # PaddleOCR's models, from rapidocr-onnxruntime
    python examples/ppocr_fusion/fuse_ppocr.py [--output-dir DIR]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

import popfuse
from popfuse import Runner, RuntimeConfig
from popfuse.benchmarks.models import ppocr

MODELS = ("det", "rec", "cls")
TOLERANCE = 1e-5


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", type=Path, default=Path(__file__).resolve().parent)
    args = parser.parse_args(argv)

    config = {
        "output_dir": str(args.output_dir),
        "output_model": "ppocr_fusion.onnx",
        "model_fusion": [{"input_model": str(ppocr(name).path), "name": name} for name in MODELS],
    }
    result = popfuse.build(config, progress=print)
    runner = Runner(result.popef_path, RuntimeConfig(validate_io_params=False))

    failed = 0
    for sub in runner.subgraphs:
        workload = ppocr(sub.name)  # the model's file and a text-like page for it
        x = workload.feeds["x"]
        (fused,) = runner.execute({sub.inputs[0]: x}).values()
        (reference,) = ort.InferenceSession(str(workload.path), providers=["CPUExecutionProvider"]).run(None, {"x": x})
        diff = float(np.abs(fused - reference).max())
        ok = fused.shape == reference.shape and diff <= TOLERANCE
        failed += not ok
        print(f"subgraph {sub.index} {sub.name}: output {list(fused.shape)}, max |fused - onnxruntime| = {diff:.2e} "
              f"{'OK' if ok else 'MISMATCH'}")
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ModuleNotFoundError as e:  # the examples extra is missing: say so in one line
        sys.exit(f"{Path(__file__).name}: {e}")
