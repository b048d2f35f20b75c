"""The dispatch structure: N model graphs behind a balanced tree of ``If`` operators.

Rules:
- One ``index`` input (uint32, [1]) selects the subgraph. A tree of depth
  ceil(log2 N) picks it, so dispatch cost grows with log N, not N.
- Every model input becomes an ``optional(tensor)`` graph input: a request
  feeds only its own model's inputs and onnxruntime needs no dummies for the
  rest, so the per-request cost does not grow with N either.
- Each model runs in an ``If`` of its own (see ``_leaf``), below the tree, so
  that it reads plain tensors and keeps onnxruntime's memory planning.
- A branch returns empty tensors for the outputs of models it does not run.
  Graph outputs declare symbolic dimensions, so those empties never disagree
  with a declared shape (which onnxruntime would log as a warning on every run).
  The real shapes live in the artifact's anchors.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..errors import FusionError
from ..rename import mapping_renamer, rename_values

INDEX = "index"
_INDEX_INT64 = "dispatch/index_int64"


@dataclass(frozen=True)
class _Out:
    name: str
    elem_type: int
    rank: int


@dataclass(frozen=True)
class _Leaf:
    nodes: list[onnx.NodeProto]
    outputs: list[str]


def build_dispatch(graphs: Sequence[onnx.GraphProto]) -> onnx.GraphProto:
    """Build the fused main graph around namespaced model graphs.

    Args:
        graphs: Model i's graph, names prefixed; its initializers stay in its branch.
    """
    outs = [[_describe_output(o) for o in g.output] for g in graphs]
    single = len(graphs) == 1
    consts: list[TensorProto] = []
    leaves = [_leaf(g, i, "" if single else "@leaf", outs[i], consts) for i, g in enumerate(graphs)]
    nodes = [helper.make_node("Cast", [INDEX], [_INDEX_INT64], to=TensorProto.INT64, name="dispatch/cast_index")]
    nodes += leaves[0].nodes if single else _tree(0, len(graphs), "root", leaves, outs, consts)
    inputs = [helper.make_tensor_value_info(INDEX, TensorProto.UINT32, [1])]
    for g in graphs:
        inputs += [_optional(i) for i in g.input]
    outputs = [_symbolic(o.name, o) for model_outs in outs for o in model_outs]
    return helper.make_graph(nodes, "popfuse_fusion", inputs, outputs, initializer=consts)


def _describe_output(info: onnx.ValueInfoProto) -> _Out:
    kind = info.type.WhichOneof("value")
    if kind != "tensor_type":
        raise FusionError(f"output {info.name!r} is a {kind}; only tensor outputs can be fused")
    tt = info.type.tensor_type
    if not tt.HasField("shape"):
        raise FusionError(
            f"the rank of output {info.name!r} is unknown; set input_shape so shape inference can find it"
        )
    return _Out(info.name, tt.elem_type, len(tt.shape.dim))


def _optional(info: onnx.ValueInfoProto) -> onnx.ValueInfoProto:
    return helper.make_value_info(info.name, helper.make_optional_type_proto(info.type))


def _symbolic(name: str, out: _Out) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, out.elem_type, [f"{out.name}:{d}" for d in range(out.rank)])


def _leaf(graph: onnx.GraphProto, index: int, suffix: str, outs: list[_Out], consts: list[TensorProto]) -> _Leaf:
    """Model ``index``'s nodes, reading its optional inputs and writing outputs named ``<output><suffix>``.

    The model runs in an ``If`` of its own whose condition (``index == i``) always
    holds when it is reached. The branch then reads plain tensors, not the
    optional graph inputs: onnxruntime plans a subgraph's memory ahead (its
    "memory pattern") only when every value entering it is a plain tensor, and
    PP-OCR models run 7-9% slower without that plan. ``OptionalGetElement``
    passes the optional value through unchanged, so an ``Identity`` makes the
    plain tensor; both sit in this small outer body, where there is nothing to plan.
    """
    g = onnx.GraphProto()
    g.CopyFrom(graph)
    produced = {name for node in g.node for name in node.output}
    renames = {i.name: f"{i.name}@tensor" for i in g.input}
    inner = {o.name: f"{o.name}@model" for o in g.output if o.name in produced}
    rename_values(g, mapping_renamer({**renames, **inner}))
    body: list[onnx.NodeProto] = list(g.node)
    model_outputs: list[str] = []
    for k, out in enumerate(graph.output):
        name = renames.get(out.name, inner.get(out.name, out.name))
        if out.name not in produced or name in model_outputs:
            # An output that is an input or a weight, or is listed twice, needs a node of its own.
            alias = f"{out.name}@model#{k}"
            body.append(helper.make_node("Identity", [name], [alias], name=f"{out.name}/alias{k}"))
            name = alias
        model_outputs.append(name)
    value_info = [v for v in g.value_info if v.name not in model_outputs]
    model_graph = helper.make_graph(
        body,
        f"model{index}",
        [],
        [_symbolic(n, o) for n, o in zip(model_outputs, outs)],
        initializer=list(g.initializer),
        value_info=value_info,
    )
    empties = [_empty(f"{o.name}@model:empty", o) for o in outs]
    never = helper.make_graph(
        empties, f"model{index}.never", [], [_symbolic(e.output[0], o) for e, o in zip(empties, outs)]
    )
    position = f"dispatch/model{index}"
    consts.append(numpy_helper.from_array(np.array([index], np.int64), position))
    outputs = [f"{o.name}{suffix}" for o in outs]
    nodes = []
    for i in graph.input:
        nodes += [
            helper.make_node("OptionalGetElement", [i.name], [f"{i.name}@value"], name=f"{i.name}/unwrap"),
            helper.make_node("Identity", [f"{i.name}@value"], [renames[i.name]], name=f"{i.name}/tensor"),
        ]
    nodes += [
        helper.make_node("Equal", [_INDEX_INT64, position], [f"{position}/selected"], name=f"{position}/equal"),
        helper.make_node(
            "If", [f"{position}/selected"], outputs, name=f"{position}/if", then_branch=model_graph, else_branch=never
        ),
    ]
    return _Leaf(nodes, outputs)


def _tree(lo: int, hi: int, tag: str, leaves: list[_Leaf], outs: list[list[_Out]], consts: list[TensorProto]):
    """Nodes that run leaf ``index`` for lo <= index < hi; outputs of the root are the public names."""
    mid = (lo + hi) // 2
    split = f"dispatch/split{mid}"
    consts.append(numpy_helper.from_array(np.array([mid], np.int64), split))
    cond = f"dispatch/{tag}/cond"

    def named(o: _Out) -> str:
        return o.name if tag == "root" else f"{o.name}@{tag}"

    branches = []
    for side, (a, b) in (("then", (lo, mid)), ("else", (mid, hi))):
        sub_tag = f"{tag}.{side}"
        if b - a == 1:
            body, produced = leaves[a].nodes, leaves[a].outputs
        else:
            body = _tree(a, b, sub_tag, leaves, outs, consts)
            produced = [f"{o.name}@{sub_tag}" for j in range(a, b) for o in outs[j]]
        names, empties = [], []
        produced_iter = iter(produced)
        for j in range(lo, hi):
            for o in outs[j]:
                if a <= j < b:
                    names.append(next(produced_iter))
                else:
                    empty = f"{o.name}@{sub_tag}:empty"
                    empties.append(_empty(empty, o))
                    names.append(empty)
        graph_outs = [_symbolic(n, o) for n, o in zip(names, (o for j in range(lo, hi) for o in outs[j]))]
        branches.append(helper.make_graph([*body, *empties], sub_tag, [], graph_outs))
    return [
        helper.make_node("Less", [_INDEX_INT64, split], [cond], name=f"dispatch/{tag}/less"),
        helper.make_node(
            "If",
            [cond],
            [named(o) for j in range(lo, hi) for o in outs[j]],
            name=f"dispatch/{tag}/if",
            then_branch=branches[0],
            else_branch=branches[1],
        ),
    ]


def _empty(name: str, out: _Out) -> onnx.NodeProto:
    dtype = helper.tensor_dtype_to_np_dtype(out.elem_type)
    value = np.zeros((0,) * out.rank if out.rank else (), dtype)
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(value), name=f"{name}/const")
