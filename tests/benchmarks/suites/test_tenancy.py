"""The tenancy suite's reading of the dispatch tree it measures against onnxruntime's own floor."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from popfuse.benchmarks.suites.tenancy import last_depth
from popfuse.fusion.dispatch import packed_graph


def _model(i: int) -> onnx.GraphProto:
    """Model i: its input plus a weight of its own, every model's weight the same size (equal costs)."""
    weight = numpy_helper.from_array(np.full((1, 64), float(i), np.float32), f"m{i}/w")
    return helper.make_graph([helper.make_node("Add", [f"m{i}/x", f"m{i}/w"], [f"m{i}/y"], name=f"m{i}/add")],
                             f"m{i}", [helper.make_tensor_value_info(f"m{i}/x", TensorProto.FLOAT, [1, 64])],
                             [helper.make_tensor_value_info(f"m{i}/y", TensorProto.FLOAT, [1, 64])], [weight])


def _levels_above_last(graph: onnx.GraphProto) -> int:
    """How many Ifs a request for the last model passes: it takes each one's else branch (the upper range)."""
    node = next((n for n in graph.node if n.op_type == "If"), None)
    if node is None:
        return 0
    (other,) = (a.g for a in node.attribute if a.name == "else_branch")
    return 1 + _levels_above_last(other)


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8, 13, 32])
def test_the_floor_is_as_deep_as_the_tree_the_compiler_builds_for_the_last_model(n):
    assert _levels_above_last(packed_graph([_model(i) for i in range(n)])) == last_depth(n)
