"""The public layout: PopRT's interface, what ``fuse`` returns and ``build`` writes as the fused ONNX.

Every model input is an ``optional(tensor)`` graph input under its anchor name,
so a request feeds only its own model's inputs and onnxruntime needs no dummies
for the rest. Graph outputs are the anchors too; a branch returns empty tensors
for the outputs of the models it does not run, and graph outputs declare
symbolic dimensions so those empties never disagree with a declared shape
(onnxruntime would warn on every run). Every request passes through outputs for
all N models: this layout is for interchange, the packed one for running.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
from onnx import helper

from .. import naming
from ..graph import copy_graph, mapping_renamer, rename_values
from .nodes import Leaf, Out, cast_index, constant, describe_output, empty, index_input, symbolic
from .tree import IfTree


def public_graph(graphs: Sequence[onnx.GraphProto]) -> onnx.GraphProto:
    """The fused main graph around namespaced model graphs (model i's graph, names prefixed,
    its weights staying in its branch)."""
    outs = [[describe_output(o) for o in g.output] for g in graphs]
    single = len(graphs) == 1
    leaves = [_leaf(g, i, outs[i], single) for i, g in enumerate(graphs)]
    flat = [o for model_outs in outs for o in model_outs]
    nodes = [cast_index()]
    if single:
        nodes += leaves[0].nodes
    else:
        nodes += _PublicTree(leaves, outs).nodes("root", [o.name for o in flat])
    inputs = [index_input()] + [
        helper.make_value_info(i.name, helper.make_optional_type_proto(i.type)) for g in graphs for i in g.input
    ]
    return helper.make_graph(nodes, "popfuse_fusion", inputs, [symbolic(o.name, o) for o in flat])


class _PublicTree(IfTree):
    """Each range returns the outputs of all its models; a branch fills those of the other side with empties."""

    def __init__(self, leaves: Sequence[Leaf], outs: list[list[Out]]):
        super().__init__(leaves, naming.INDEX_INT64)
        self.outs = outs

    def outputs(self, lo: int, hi: int) -> list[Out]:
        return [o for j in range(lo, hi) for o in self.outs[j]]

    def fill(self, lo, hi, a, b, tag, produced):
        names, made = [], []
        ran = iter(produced)
        for j in range(lo, hi):
            for o in self.outs[j]:
                if a <= j < b:
                    names.append(next(ran))
                else:
                    made.append(empty(naming.empty(o.name, tag), o))
                    names.append(made[-1].output[0])
        return names, made


def _leaf(graph: onnx.GraphProto, index: int, outs: list[Out], single: bool) -> Leaf:
    """Model ``index``'s nodes, reading its optional inputs, writing its outputs (their anchors when
    ``single``, else ``naming.at(anchor, "leaf")``).

    The model runs in an ``If`` of its own whose condition (``index == i``) always
    holds when it is reached. The branch then reads plain tensors, not the
    optional graph inputs: onnxruntime plans a subgraph's memory ahead (its
    "memory pattern") only when every value entering it is a plain tensor.
    ``OptionalGetElement`` passes the optional value through unchanged, so an
    ``Identity`` makes the plain tensor; both sit in this small outer body.
    """
    g = copy_graph(graph)
    produced = {name for node in g.node for name in node.output}
    tensors = {i.name: naming.at(i.name, "tensor") for i in g.input}
    inner = {o.name: naming.at(o.name, "model") for o in g.output if o.name in produced}
    rename_values(g, mapping_renamer({**tensors, **inner}))
    body: list[onnx.NodeProto] = list(g.node)
    model_outputs: list[str] = []
    for k, out in enumerate(graph.output):
        name = tensors.get(out.name, inner.get(out.name, out.name))
        if out.name not in produced or name in model_outputs:
            # An output that is an input or a weight, or is listed twice, needs a node of its own.
            alias = naming.at(out.name, f"model#{k}")
            body.append(helper.make_node("Identity", [name], [alias], name=naming.node(alias, "alias")))
            name = alias
        model_outputs.append(name)
    model_graph = helper.make_graph(
        body, f"model{index}", [], [symbolic(n, o) for n, o in zip(model_outputs, outs)],
        initializer=list(g.initializer), value_info=[v for v in g.value_info if v.name not in model_outputs],
    )
    empties = [empty(naming.empty(o.name, "model"), o) for o in outs]
    never = helper.make_graph(
        empties, f"model{index}.never", [], [symbolic(e.output[0], o) for e, o in zip(empties, outs)]
    )
    position = naming.model_position(index)
    selected = naming.at(position, "selected")
    outputs = [o.name if single else naming.at(o.name, "leaf") for o in outs]
    nodes = [constant(position, np.array([index], np.int64))]
    for i in graph.input:
        value = naming.at(i.name, "value")
        nodes += [
            helper.make_node("OptionalGetElement", [i.name], [value], name=naming.node(value, "unwrap")),
            helper.make_node("Identity", [value], [tensors[i.name]], name=naming.node(tensors[i.name], "tensor")),
        ]
    nodes += [
        helper.make_node("Equal", [naming.INDEX_INT64, position], [selected], name=naming.node(selected, "equal")),
        helper.make_node("If", [selected], outputs, name=naming.node(position, "if"),
                         then_branch=model_graph, else_branch=never),
    ]
    return Leaf(nodes, outputs)
