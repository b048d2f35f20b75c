"""Small ONNX models for the tests, written in ONNX text syntax, and the PP-OCR models."""

from __future__ import annotations

import importlib.resources
from pathlib import Path

import onnx
import onnx.parser

from fusion import IR_VERSION

PPOCR = {
    "det": "ch_PP-OCRv4_det_infer.onnx",
    "rec": "ch_PP-OCRv4_rec_infer.onnx",
    "cls": "ch_ppocr_mobile_v2.0_cls_infer.onnx",
}
# Input sizes each PP-OCR model accepts (det needs multiples of 32).
PPOCR_SHAPES = {"det": (1, 3, 96, 160), "rec": (1, 3, 48, 320), "cls": (1, 3, 48, 192)}


def ppocr_path(name: str) -> Path:
    """Path of a PP-OCR model shipped in rapidocr-onnxruntime."""
    return Path(str(importlib.resources.files("rapidocr_onnxruntime") / "models" / PPOCR[name]))


def parse(text: str, opset: int = 13) -> onnx.ModelProto:
    """A model from ONNX text syntax, with the IR version onnxruntime reads."""
    model = onnx.parser.parse_model(
        f'<ir_version: {IR_VERSION}, opset_import: ["" : {opset}]>\n' + text
    )
    onnx.checker.check_model(model)
    return model


def scale_model(factor: float = 2.0, opset: int = 13, n: int = 4) -> onnx.ModelProto:
    """O = X * factor + B, named X/O like PopRT's example, with a weight B."""
    return parse(
        f"""
        agraph (float[1, {n}] X) => (float[1, {n}] O)
        <float[{n}] B = {{{", ".join(str(float(i)) for i in range(n))}}}, float f = {{{factor}}}>
        {{
            t = Mul(X, f)
            O = Add(t, B)
        }}
        """,
        opset,
    )


def if_model(opset: int = 13) -> onnx.ModelProto:
    """A model with its own If: O = X + 1 when sum(X) > 0, else X - 1."""
    return parse(
        """
        agraph (float[1, 3] X) => (float[1, 3] O)
        <float one = {1.0}, float zero = {0.0}>
        {
            s = ReduceSum<keepdims = 0>(X)
            c = Greater(s, zero)
            O = If(c) <
                then_branch = g1 () => (float[1, 3] a) { a = Add(X, one) },
                else_branch = g2 () => (float[1, 3] b) { b = Sub(X, one) }
            >
        }
        """,
        opset,
    )


def dynamic_model() -> onnx.ModelProto:
    """O = Relu(X) with a dynamic batch and a fixed width of 4."""
    return parse(
        """
        agraph (float[N, 4] X) => (float[N, 4] O)
        {
            O = Relu(X)
        }
        """
    )
