"""Removing neutral Mul/Div/Add/Sub and Identity nodes, without changing the graph's interface."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

from popfuse.fusion.passes.scale_ops import remove_useless_scale_ops
from tests.models import parse


def run(model, x):
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"X": x})


def test_neutral_chains_go_and_outputs_stay():
    model = parse(
        """
        agraph (float[2, 3] X) => (float[2, 3] O, float[2, 3] P)
        <float[1] one = {1.0}, float zero = {0.0}, float[3] bias = {1.0, 2.0, 3.0}>
        {
            a = Identity(X)
            b = Div(a, one)
            c = Sub(b, zero)
            O = Add(c, bias)
            P = Mul(c, one)
        }
        """
    )
    result = remove_useless_scale_ops(model)
    cleaned, removed = result.model, result.details
    assert removed == 3  # Identity, Div by 1, Sub of 0; P = Mul(c, 1) is a graph output and stays
    assert [n.op_type for n in cleaned.graph.node] == ["Add", "Mul"]
    assert {t.name for t in cleaned.graph.initializer} == {"one", "bias"}  # zero was read only by the Sub
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    for got, want in zip(run(cleaned, x), run(model, x)):
        np.testing.assert_array_equal(got, want)


def test_a_broadcasting_constant_is_not_neutral():
    model = parse(
        """
        agraph (float[3] X) => (float[2, 3] O)
        <float[2, 3] ones = {1.0, 1.0, 1.0, 1.0, 1.0, 1.0}>
        {
            b = Mul(X, ones)
            O = Relu(b)
        }
        """
    )
    result = remove_useless_scale_ops(model)
    cleaned, removed = result.model, result.details
    assert removed == 0 and len(cleaned.graph.node) == 2
