"""The benchmarks' models: the tenants made from PP-OCR are distinct and compute what their source does."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

from popfuse.benchmarks.models import variant


def test_a_variant_moves_every_weight_but_keeps_the_scalars(tmp_path):
    # Moving a layer norm's exponent made x ** 2.002: NaN for every negative x, hidden only where onnxruntime
    # fused the layer norm.
    first, second = variant("rec", 0, tmp_path), variant("rec", 1, tmp_path)
    one, other = (onnx.load(w.path).graph.initializer for w in (first, second))
    scalars = moved = 0
    for a, b in zip(one, other):
        if a.data_type != onnx.TensorProto.FLOAT:
            continue
        same = np.array_equal(numpy_helper.to_array(a), numpy_helper.to_array(b))
        if np.prod(a.dims) > 1:
            moved += not same
        else:
            scalars += same
    assert moved > 100 and scalars > 10
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # the graph's own arithmetic
    out = ort.InferenceSession(str(first.path), options, providers=["CPUExecutionProvider"]).run(None, first.feeds)
    assert np.isfinite(out[0]).all()
