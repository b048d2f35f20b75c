"""The node-names pass: the optimiser's generated names, numbered in graph order; popfuse's kept."""

from __future__ import annotations

from onnx import helper

from popfuse.fusion.graph import walk_nodes
from popfuse.fusion.passes.node_names import canonical_node_names
from tests.models import if_model


def test_generated_names_are_numbered_in_order_and_namespaced_ones_kept():
    model = if_model()
    names = ["ReorderOutput_token_223", "graph0/Greater", "ReorderOutput"]
    for node, name in zip(model.graph.node, names):
        node.name = name
    branch = model.graph.node[2].attribute[0].g
    branch.node[0].name = "Transpose_token_9"
    result = canonical_node_names(model)
    got = [n.name for n in walk_nodes(result.model.graph.node)]
    assert got[:2] == ["ReorderOutput_token_0", "graph0/Greater"]
    assert got[2] == "ReorderOutput_token_1" and got[3] == "Transpose_token_2"
    assert result.details == 3 and result.modified


def test_a_graph_without_generated_names_is_unchanged():
    model = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"], name="graph0/relu")], "g",
                                                [helper.make_tensor_value_info("x", 1, [1])],
                                                [helper.make_tensor_value_info("y", 1, [1])]))
    result = canonical_node_names(model)
    assert not result.modified and result.model.graph == model.graph
