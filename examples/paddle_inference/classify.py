"""Paddle Inference's IPU demo flow on popfuse: Config → enable_ipu → create_predictor → run.

It classifies a line of text drawn with Pillow, upright and upside down, with PaddleOCR's
direction classifier (shipped in rapidocr-onnxruntime), then runs the same
classifier from a fused artifact through the same API.

    pip install -e '.[examples]'    # PaddleOCR's models (rapidocr-onnxruntime) and Pillow
    python examples/paddle_inference/classify.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

import popfuse
from popfuse import inference as paddle_infer
from popfuse.benchmarks.models import ppocr_path

LABELS = ("0 degrees", "180 degrees")


def text_line(text: str = "popfuse 2026", height: int = 48, width: int = 192) -> np.ndarray:
    """``text`` drawn in black on white, normalised as PaddleOCR's classifier expects (1x3x48x192)."""
    from PIL import Image, ImageDraw

    small = Image.new("L", (width // 2, height // 2), 255)
    ImageDraw.Draw(small).text((4, 6), text, fill=0)  # Pillow's built-in font, then scaled up
    line = np.asarray(small.resize((width, height)), dtype=np.float32)
    image = np.repeat(line[None], 3, axis=0)
    return ((image / 255.0 - 0.5) / 0.5)[None].astype(np.float32)


def classify(predictor, image: np.ndarray) -> np.ndarray:
    name = predictor.get_input_names()[0]
    handle = predictor.get_input_handle(name)
    handle.reshape(image.shape)
    handle.copy_from_cpu(image)
    predictor.run()
    return predictor.get_output_handle(predictor.get_output_names()[0]).copy_to_cpu()


def main() -> None:
    config = paddle_infer.Config(str(ppocr_path("cls")))
    config.enable_ipu(1, 1)  # one device, micro batch 1: fixes the model's dynamic batch dimension
    predictor = paddle_infer.create_predictor(config)
    upright = text_line()
    for label, image in (("upright", upright), ("flipped", upright[:, :, ::-1, ::-1].copy())):
        probabilities = classify(predictor, image)[0]
        print(f"{label}: class {int(probabilities.argmax())} ({LABELS[int(probabilities.argmax())]}), "
              f"probabilities {[round(float(p), 3) for p in probabilities]}")

    with tempfile.TemporaryDirectory() as folder:
        result = popfuse.build({
            "output_dir": folder,
            "model_fusion": [{"input_model": str(ppocr_path(n)), "name": n} for n in ("det", "cls")],
        })
        fused = paddle_infer.create_predictor(paddle_infer.Config(str(result.popef_path)))
        print(f"fused artifact inputs: {fused.get_input_names()}")
        fused.get_input_handle("graph1/x").copy_from_cpu(upright)
        fused.run()
        probabilities = fused.get_output_handle("graph1/save_infer_model/scale_0.tmp_1").copy_to_cpu()[0]
        print(f"fused cls: class {int(probabilities.argmax())}, "
              f"probabilities {[round(float(p), 3) for p in probabilities]}")


if __name__ == "__main__":
    try:
        main()
    except ModuleNotFoundError as e:  # the examples extra is missing: say so in one line
        sys.exit(f"{Path(__file__).name}: {e}")
