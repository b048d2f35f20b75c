"""The namespace pass: every name, nested graphs included, under graph{i}/."""

from __future__ import annotations

import onnx

from popfuse.fusion import fuse
from popfuse.fusion.passes.namespace import add_namespace
from popfuse.runtime import RuntimeConfig
from tests.models import if_model, scale_model

LENIENT = RuntimeConfig(validate_io_params=False)


def test_every_name_inside_nested_graphs_is_prefixed():
    fused = fuse([if_model(), if_model()])
    seen = []

    def walk(graph):
        for node in graph.node:
            seen.extend(n for n in (*node.input, *node.output) if n)
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    walk(attr.g)

    walk(fused.graph)
    model_names = [n for n in seen if not n.startswith(("dispatch/", "index"))]
    assert model_names and all(n.startswith(("graph0/", "graph1/")) for n in model_names)


def test_values_nodes_and_weights_get_the_prefix():
    result = add_namespace(scale_model(), "graph5/")
    graph = result.model.graph
    assert result.modified
    assert [i.name for i in graph.input] == ["graph5/X"] and [o.name for o in graph.output] == ["graph5/O"]
    assert {t.name for t in graph.initializer} == {"graph5/B", "graph5/f"}
    assert all(n.startswith("graph5/") for node in graph.node for n in (*node.input, *node.output))
