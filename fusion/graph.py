"""Walking and editing ONNX graphs, nested subgraphs included, and the IR version popfuse writes.

ONNX names are scoped: a node inside an ``If`` or ``Loop`` body may use a value
of an enclosing graph by name, so a rename must reach every nested graph.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import onnx

#: The IR version of every model popfuse writes: onnx 1.23 writes 14 by default, onnxruntime 1.31 reads at most 11.
IR_VERSION = 10

Renamer = Callable[[str], str]


def subgraphs(node: onnx.NodeProto) -> Iterator[onnx.GraphProto]:
    """The graphs held in a node's attributes (``If`` branches, ``Loop`` bodies …)."""
    for attr in node.attribute:
        if attr.type == onnx.AttributeProto.GRAPH:
            yield attr.g
        elif attr.type == onnx.AttributeProto.GRAPHS:
            yield from attr.graphs


def walk_nodes(nodes: Iterable[onnx.NodeProto]) -> Iterator[onnx.NodeProto]:
    """Every node of ``nodes`` and of the graphs they hold, depth first."""
    for node in nodes:
        yield node
        for sub in subgraphs(node):
            yield from walk_nodes(sub.node)


def graph_inputs(graph: onnx.GraphProto) -> list[onnx.ValueInfoProto]:
    """The inputs a caller feeds: the graph's inputs that are not also initializers (IR < 4 lists both)."""
    initializers = {t.name for t in graph.initializer}
    return [i for i in graph.input if i.name not in initializers]


def tensor_nbytes(tensor: onnx.TensorProto) -> int:
    """Bytes of data a tensor holds, whatever field stores it."""
    count = 1
    for d in tensor.dims:
        count *= d
    return count * onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize


def initializer_bytes(graphs: Iterable[onnx.GraphProto], read_by: Iterable[onnx.NodeProto] | None = None) -> int:
    """Bytes of the initializers of ``graphs`` (not of graphs nested in them); with ``read_by``, only of
    those these nodes read."""
    read = None if read_by is None else {name for node in read_by for name in node.input}
    return sum(tensor_nbytes(t) for g in graphs for t in g.initializer if read is None or t.name in read)


def copy_graph(graph: onnx.GraphProto) -> onnx.GraphProto:
    """A deep copy of ``graph``, to edit without touching the original."""
    out = onnx.GraphProto()
    out.CopyFrom(graph)
    return out


def copy_model(model: onnx.ModelProto) -> onnx.ModelProto:
    """A deep copy of ``model``, to edit without touching the original."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


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
