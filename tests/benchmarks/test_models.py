"""The benchmarks' models: the tenants made from PP-OCR are distinct and compute what their source does."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from popfuse.benchmarks.models import nested_in_ifs, variant


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


def _if_levels(graph: onnx.GraphProto) -> int:
    ifs = [n for n in graph.node if n.op_type == "If"]
    return 1 + max(_if_levels(a.g) for a in ifs[0].attribute) if ifs else 0


def test_a_model_nested_in_ifs_runs_its_own_graph_that_many_levels_down(tmp_path):
    # onnxruntime's floor for the tenants' p50: the classifier itself, behind as many Ifs as the tree has.
    workload = variant("cls", 0, tmp_path)
    model = onnx.load(workload.path)
    plain = ort.InferenceSession(str(workload.path), providers=["CPUExecutionProvider"]).run(None, workload.feeds)
    for depth in (0, 3):
        nested = nested_in_ifs(model, depth)
        onnx.checker.check_model(nested, full_check=True)
        assert _if_levels(nested.graph) == depth
        session = ort.InferenceSession(nested.SerializeToString(), providers=["CPUExecutionProvider"])
        feeds = {**workload.feeds, "index": np.zeros(1, np.int64)} if depth else workload.feeds
        np.testing.assert_array_equal(session.run(None, feeds)[0], plain[0])


def test_nesting_keeps_weights_a_model_lists_among_its_inputs_as_weights_and_refuses_what_it_cannot_nest():
    weight = numpy_helper.from_array(np.ones((1, 4), np.float32), "w")
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Add", ["x", "w"], ["y"])], "old",
        [onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, [1, 4]) for n in ("x", "w")],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 4])], [weight])
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)], ir_version=10)
    session = ort.InferenceSession(nested_in_ifs(model, 2).SerializeToString(), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["x", "index"]
    x = np.arange(4, dtype=np.float32).reshape(1, 4)
    np.testing.assert_array_equal(session.run(None, {"x": x, "index": np.zeros(1, np.int64)})[0], x + 1)
    with pytest.raises(ValueError, match="depth of 0 or more, not -1"):
        nested_in_ifs(model, -1)
    model.graph.output.append(onnx.helper.make_tensor_value_info("x2", onnx.TensorProto.FLOAT, [1, 4]))
    with pytest.raises(ValueError, match="one output; 'old' has 2"):
        nested_in_ifs(model, 1)
