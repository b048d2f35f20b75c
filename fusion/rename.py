"""Renaming values throughout a graph, its nested subgraphs included.

ONNX names are scoped: a node inside an ``If`` or ``Loop`` body may use a value
of an enclosing graph by name, so a rename must reach every nested graph.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import onnx

Renamer = Callable[[str], str]


def subgraphs(node: onnx.NodeProto) -> Iterator[onnx.GraphProto]:
    """The graphs held in a node's attributes (``If`` branches, ``Loop`` bodies …)."""
    for attr in node.attribute:
        if attr.type == onnx.AttributeProto.GRAPH:
            yield attr.g
        elif attr.type == onnx.AttributeProto.GRAPHS:
            yield from attr.graphs


def rename_values(graph: onnx.GraphProto, rename: Renamer, node_names: Renamer | None = None) -> None:
    """Rename, in place, every value name in ``graph`` and in its nested graphs.

    The empty name, which marks an omitted optional input, is kept.

    Args:
        graph: The graph to edit.
        rename: Old value name → new value name.
        node_names: Old node name → new node name; None keeps node names.
    """

    def value(name: str) -> str:
        return rename(name) if name else name

    for node in graph.node:
        node.input[:] = [value(n) for n in node.input]
        node.output[:] = [value(n) for n in node.output]
        if node_names is not None and node.name:
            node.name = node_names(node.name)
        for sub in subgraphs(node):
            rename_values(sub, rename, node_names)
    for info in (*graph.input, *graph.output, *graph.value_info):
        info.name = value(info.name)
    for tensor in graph.initializer:
        tensor.name = value(tensor.name)
    for sparse in graph.sparse_initializer:
        sparse.values.name = value(sparse.values.name)
    for annotation in graph.quantization_annotation:
        annotation.tensor_name = value(annotation.tensor_name)


def mapping_renamer(mapping: dict[str, str]) -> Renamer:
    """A renamer that changes the names in ``mapping`` and keeps the rest."""
    return lambda name: mapping.get(name, name)
