"""Graph helpers: walking nested graphs, renaming through them, fed inputs and weight bytes."""

from __future__ import annotations

import numpy as np
from onnx import helper, numpy_helper

from popfuse.fusion.graph import (
    graph_inputs,
    initializer_bytes,
    mapping_renamer,
    rename_values,
    tensor_nbytes,
    walk_nodes,
)
from tests.models import if_model, scale_model


def test_walk_reaches_the_nodes_of_nested_branches():
    ops = [n.op_type for n in walk_nodes(if_model().graph.node)]
    assert ops == ["ReduceSum", "Greater", "If", "Add", "Sub"]


def test_rename_reaches_nested_graphs_and_keeps_the_empty_name():
    model = if_model()
    rename_values(model.graph, mapping_renamer({"X": "Y"}))
    reads = [i for n in walk_nodes(model.graph.node) for i in n.input]
    assert "X" not in reads and reads.count("Y") == 3


def test_inputs_that_are_also_initializers_are_not_fed():
    model = scale_model()
    model.graph.input.append(helper.make_tensor_value_info("B", 1, [4]))
    assert [i.name for i in graph_inputs(model.graph)] == ["X"]


def test_weight_bytes_of_all_or_of_what_some_nodes_read():
    model = scale_model(n=8)
    assert tensor_nbytes(numpy_helper.from_array(np.zeros((3, 5), np.float16))) == 30
    assert initializer_bytes([model.graph]) == 8 * 4 + 4
    assert initializer_bytes([model.graph], read_by=[model.graph.node[1]]) == 8 * 4
