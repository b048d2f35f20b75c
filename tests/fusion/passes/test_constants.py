"""The constant-folding pass: constant subexpressions fold, bounded by max_tensor_size; Constant nodes
become initializers."""

from __future__ import annotations

import collections

import numpy as np
import onnx
import onnxruntime as ort

from popfuse.fusion.passes.constants import fold_constants
from popfuse.runtime import Runner
from tests.models import affine_grid_expanded, parse, ppocr_input, ppocr_path, scale_model


def folding_model():
    return parse(
        """
        agraph (float[1, 4] X) => (float[1, 4] O)
        <float[4] big = {1.0, 2.0, 3.0, 4.0}>
        {
            two = Constant<value = float[4] {2.0, 2.0, 2.0, 2.0}>()
            w = Mul(big, two)
            O = Add(X, w)
        }
        """
    )


def test_a_constant_subexpression_folds_into_one_weight():
    result = fold_constants(folding_model())
    assert result.modified
    assert [n.op_type for n in result.model.graph.node] == ["Add"]
    (weight,) = result.model.graph.initializer
    np.testing.assert_array_equal(onnx.numpy_helper.to_array(weight), [2, 4, 6, 8])


def test_max_tensor_size_bounds_what_folding_creates():
    result = fold_constants(folding_model(), max_tensor_size=8)  # the folded weight would be 16 bytes
    assert "Mul" in [n.op_type for n in result.model.graph.node]


def test_a_real_exporters_constant_weights_become_initializers_and_results_stay():
    model = onnx.load(ppocr_path("cls"))
    before = collections.Counter(n.op_type for n in model.graph.node)
    folded = fold_constants(model).model
    after = collections.Counter(n.op_type for n in folded.graph.node)
    assert before["Constant"] > 100 and after["Constant"] == 0 and len(folded.graph.initializer) > 100
    x = ppocr_input("cls", seed=3)
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    got = ort.InferenceSession(folded.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    np.testing.assert_allclose(got[0], want[0], atol=1e-6)


def test_if_branches_that_read_their_own_outputs_survive_folding(make_artifact):
    # ONNX's function-expanded AffineGrid: onnx-graphsurgeon's flattening of its constant If left a Div
    # reading a value nothing produced, which made the fused graph invalid.
    model = affine_grid_expanded()
    theta = np.random.default_rng(0).random((2, 2, 3), dtype=np.float32)
    size = np.array([2, 3, 4, 5], np.int64)
    expected = ort.InferenceSession(model.SerializeToString()).run(None, {"theta": theta, "size": size})[0]
    onnx.checker.check_model(fold_constants(model).model, full_check=True)
    runner = Runner(make_artifact([scale_model(opset=22), model]))
    got = runner.execute({"index": np.array([1], np.uint32), "graph1/theta": theta, "graph1/size": size})
    np.testing.assert_allclose(got["graph1/grid"], expected, rtol=1e-6)
