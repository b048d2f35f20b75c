"""Small ONNX models for the tests, written in ONNX text syntax, and the PP-OCR models."""

from __future__ import annotations

import numpy as np
import onnx
import onnx.parser

from benchmarks.models import PPOCR, ppocr, ppocr_path  # noqa: F401  (re-exported for the tests)
from fusion import IR_VERSION


def ppocr_input(name: str, seed: int = 0) -> np.ndarray:
    """A text-like request for PP-OCR model ``name``: the detector finds text in it."""
    return ppocr(name, seed).feeds["x"]


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


def multi_output_model() -> onnx.ModelProto:
    """Four outputs of two element types, a scalar among them, and one output that is a weight."""
    return parse(
        """
        agraph (float[1, 4] X) => (float[1, 4] A, int64[2] S, float[2, 2] B, float M, int64[3] K)
        <int64[2] shape = {2, 2}, int64[3] K = {7, 8, 9}>
        {
            A = Relu(X)
            S = Identity(shape)
            B = Reshape(X, shape)
            M = ReduceMax<keepdims = 0>(X)
        }
        """
    )
