"""Re-laying a fused graph from the public layout into the packed one the backend compiles.

``fuse`` returns the public layout (outputs named ``graph{i}/<name>``, as PopRT
has them); the compiler compiles the packed layout, where every model reads and
writes a few shared slots, so the per-request cost does not grow with the
number of models (see ``dispatch``). Each model's graph is
recovered from its own ``If`` in the public graph, so the fused ONNX stays the
one input of compilation.
"""

from __future__ import annotations

import onnx
from onnx import helper

from runtime import metadata as md

from ..errors import FusionError
from ..rename import mapping_renamer, rename_values, subgraphs
from .dispatch import build_dispatch
from .sharing import Group, group_models


def _model_branches(graph: onnx.GraphProto, found: dict[str, onnx.GraphProto]) -> dict[str, onnx.GraphProto]:
    for node in graph.node:
        if node.op_type == "If" and node.name.startswith("dispatch/model") and node.name.endswith("/if"):
            found[node.name] = next(a.g for a in node.attribute if a.name == "then_branch")
        for sub in subgraphs(node):
            _model_branches(sub, found)
    return found


def model_graphs(fused: onnx.ModelProto, fusion_map: md.FusionMap) -> list[onnx.GraphProto]:
    """Each subgraph's namespaced model graph, as ``fuse`` prepared it, from a public-layout graph."""
    branches = _model_branches(fused.graph, {})
    inputs = {i.name: i for i in fused.graph.input}
    graphs = []
    for sub in fusion_map.subgraphs:
        branch = branches.get(f"dispatch/model{sub.index}/if")
        if branch is None:
            raise FusionError(f"the fused graph has no branch for subgraph {sub.index} ({sub.name!r})")
        g = onnx.GraphProto()
        g.CopyFrom(branch)
        renames = {f"{name}@tensor": name for name in sub.inputs}
        producers = {o: n for n in g.node for o in n.output}
        aliases = []
        for k, (out, anchor) in enumerate(zip(g.output, sub.outputs)):
            node = producers.get(out.name)
            if node is not None and node.name == f"{anchor}/alias{k}":
                aliases.append(node)  # _leaf's alias of a weight output: the weight is the output again
            else:
                renames[out.name] = anchor
        for node in aliases:
            g.node.remove(node)
        rename_values(g, mapping_renamer(renames))
        for out, anchor in zip(g.output, sub.outputs):
            out.name = anchor
        graph_inputs = []
        for name in sub.inputs:
            tensor_type = onnx.TypeProto()
            tensor_type.CopyFrom(inputs[name].type.optional_type.elem_type)
            graph_inputs.append(helper.make_value_info(name, tensor_type))
        graphs.append(
            helper.make_graph(
                list(g.node), sub.name, graph_inputs, list(g.output),
                initializer=list(g.initializer), value_info=list(g.value_info),
            )
        )
    return graphs


def packed_layout(fused: onnx.ModelProto, fusion_map: md.FusionMap) -> tuple[onnx.ModelProto, tuple[Group, ...]]:
    """The same models, dispatched by the same ``index``, in the packed layout; and which of them
    share computation there (``sharing``). The fused model's records (``metadata_props``) are
    left out: the artifact keeps them in its metadata blobs, once."""
    graphs = model_graphs(fused, fusion_map)
    groups = tuple(group_models(graphs))
    out = onnx.ModelProto()
    out.CopyFrom(fused)
    del out.metadata_props[:]
    out.graph.CopyFrom(build_dispatch(graphs, packed=True, groups=groups))
    return out, groups
