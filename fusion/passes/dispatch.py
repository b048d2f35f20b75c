"""The dispatch structure: N model graphs behind a balanced tree of ``If`` operators.

In both layouts one ``index`` input (uint32, [1]) selects the subgraph, and a
tree of ``If`` of depth ceil(log2 N) picks it. They differ in the interface:
- ``public`` (what ``fuse`` returns): every model input is an
  ``optional(tensor)`` graph input ``graph{i}/<name>``, so a request feeds only
  its own model's inputs and onnxruntime needs no dummies for the rest; each
  model runs in an ``If`` of its own (see ``_leaf``), below the tree, so that it
  reads plain tensors and keeps onnxruntime's memory planning. Graph outputs
  are ``graph{i}/<name>``, as PopRT names them. A branch returns empty tensors for the outputs of the
  models it does not run; graph outputs declare symbolic dimensions so those
  empties never disagree with a declared shape (onnxruntime would warn on every
  run). Every request passes through outputs for all N models.
- ``packed`` (what the compiler compiles): inputs and outputs travel as one
  flat stream per element type plus int64 vectors of shapes (and, for inputs,
  offsets into the streams). Every ``If`` then reads and returns those few
  values whatever N is, so a request costs O(log N); and since the streams are
  plain tensors, always fed, a model's branch keeps onnxruntime's memory
  planning without the unwrapping ``_leaf`` needs. The runner packs a request's
  inputs (a view when a type has one input) and unpacks the outputs as views.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from runtime.dtypes import popef_from_onnx

from ..errors import FusionError
from ..rename import mapping_renamer, rename_values
from .sharing import Group, group_models

INDEX = "index"
PACKED_SHAPES = "packed/shapes"
PACKED_INPUT_SHAPES = "packed_in/shapes"
PACKED_INPUT_OFFSETS = "packed_in/offsets"
_INDEX_INT64 = "dispatch/index_int64"
_GROUP = "dispatch/group"


def packed_stream(elem_type: int) -> str:
    """The packed-layout output that carries the outputs of one element type."""
    return f"packed/{popef_from_onnx(elem_type)}"


def packed_input_stream(elem_type: int) -> str:
    """The packed-layout input that carries the inputs of one element type."""
    return f"packed_in/{popef_from_onnx(elem_type)}"


@dataclass(frozen=True)
class _Out:
    name: str
    elem_type: int
    rank: int


@dataclass(frozen=True)
class _Leaf:
    nodes: list[onnx.NodeProto]
    outputs: list[str]
    initializers: tuple[TensorProto, ...] = ()
    value_info: tuple[onnx.ValueInfoProto, ...] = ()


def build_dispatch(
    graphs: Sequence[onnx.GraphProto], packed: bool = False, groups: Sequence[Group] | None = None
) -> onnx.GraphProto:
    """Build the fused main graph around namespaced model graphs.

    Args:
        graphs: Model i's graph, names prefixed; its initializers stay in its branch.
        packed: Build the packed layout instead of the public one.
        groups: For the packed layout, the models that share computation
            (``sharing.group_models``); None groups them here.
    """
    outs = [[_describe_output(o) for o in g.output] for g in graphs]
    nodes = [helper.make_node("Cast", [INDEX], [_INDEX_INT64], to=TensorProto.INT64, name="dispatch/cast_index")]
    selector = _INDEX_INT64
    if packed:
        types = sorted({o.elem_type for model_outs in outs for o in model_outs})
        in_types = sorted({i.type.tensor_type.elem_type for g in graphs for i in g.input})
        slots = [_Out(packed_stream(t), t, 1) for t in types] + [_Out(PACKED_SHAPES, TensorProto.INT64, 1)]
        groups = group_models(graphs) if groups is None else groups
        at = "" if len(groups) == 1 else None  # a single leaf writes the graph outputs itself
        leaves = [_group_leaf(group, types, slots, at) for group in groups]
        if len(groups) < len(graphs):  # the tree chooses among groups: the index names a group
            position = {m: k for k, group in enumerate(groups) for m in group.members}
            nodes += _select(_GROUP, [position[i] for i in range(len(graphs))])
            selector = _GROUP
        per_model = [slots for _ in leaves]
        shared = True
    else:
        single = len(graphs) == 1
        leaves = [_leaf(g, i, "" if single else "@leaf", outs[i]) for i, g in enumerate(graphs)]
        per_model, shared = outs, False
        slots = [o for model_outs in outs for o in model_outs]
    initializers: list[TensorProto] = []
    value_info: list[onnx.ValueInfoProto] = []
    if len(leaves) == 1:
        nodes += leaves[0].nodes
        initializers, value_info = list(leaves[0].initializers), list(leaves[0].value_info)
    else:
        nodes += _tree(0, len(leaves), "root", leaves, per_model, shared, selector)
    inputs = [helper.make_tensor_value_info(INDEX, TensorProto.UINT32, [1])]
    if packed:
        inputs += [helper.make_tensor_value_info(packed_input_stream(t), t, [f"{packed_input_stream(t)}:0"])
                   for t in in_types]
        inputs += [helper.make_tensor_value_info(n, TensorProto.INT64, [f"{n}:0"])
                   for n in (PACKED_INPUT_SHAPES, PACKED_INPUT_OFFSETS)]
    else:
        for g in graphs:
            inputs += [_optional(i) for i in g.input]
    outputs = [_symbolic(o.name, o) for o in slots]
    return helper.make_graph(
        nodes, "popfuse_fusion", inputs, outputs, initializer=initializers, value_info=value_info
    )


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


def _leaf(graph: onnx.GraphProto, index: int, suffix: str, outs: list[_Out]) -> _Leaf:
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
    outputs = [f"{o.name}{suffix}" for o in outs]
    nodes = [_constant(position, np.array([index], np.int64))]
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


def _unpack_inputs(inputs: Sequence[onnx.ValueInfoProto]) -> list[onnx.NodeProto]:
    """Nodes that cut each input out of the packed streams, under its own name.

    Input k's dimensions are a fixed slice of ``packed_in/shapes`` (the ranks are
    static); an input alone in its type's stream is that stream, reshaped (an
    alias), while inputs sharing a stream are cut out at the bounds that
    ``packed_in/offsets`` holds for them (two entries per input, in input order).
    """
    nodes: list[onnx.NodeProto] = []
    input_types = [i.type.tensor_type.elem_type for i in inputs]
    at_dim = 0
    for k, (info, elem_type) in enumerate(zip(inputs, input_types)):
        rank = len(info.type.tensor_type.shape.dim)
        dims = f"{info.name}/dims"
        nodes += [
            _constant(f"{dims}/from", np.array([at_dim], np.int64)),
            _constant(f"{dims}/to", np.array([at_dim + rank], np.int64)),
            helper.make_node("Slice", [PACKED_INPUT_SHAPES, f"{dims}/from", f"{dims}/to"], [dims], name=f"{dims}/slice"),
        ]
        at_dim += rank
        stream = packed_input_stream(elem_type)
        if input_types.count(elem_type) > 1:
            bounds = f"{info.name}/bounds"
            nodes += [
                _constant(f"{bounds}/at", np.array([2 * k], np.int64)),
                _constant(f"{bounds}/next", np.array([2 * k + 1], np.int64)),
                _constant(f"{bounds}/end", np.array([2 * k + 2], np.int64)),
                helper.make_node("Slice", [PACKED_INPUT_OFFSETS, f"{bounds}/at", f"{bounds}/next"], [f"{bounds}/start"],
                                 name=f"{bounds}/start"),
                helper.make_node("Slice", [PACKED_INPUT_OFFSETS, f"{bounds}/next", f"{bounds}/end"], [f"{bounds}/stop"],
                                 name=f"{bounds}/stop"),
                helper.make_node("Slice", [stream, f"{bounds}/start", f"{bounds}/stop"], [f"{info.name}/flat"],
                                 name=f"{info.name}/cut"),
            ]
            stream = f"{info.name}/flat"
        nodes.append(helper.make_node("Reshape", [stream, dims], [info.name], name=f"{info.name}/shape"))
    return nodes


def _pack_outputs(graph: onnx.GraphProto, prefix: str, types: list[int], suffix: str) -> _Leaf:
    """``graph``'s nodes, then nodes that flatten its outputs into the packed streams ``<stream><suffix>``.

    A type's only output becomes its stream without a copy, several are
    concatenated; their shapes are concatenated into the shape vector.
    """
    outs = [_describe_output(o) for o in graph.output]
    nodes = list(graph.node)
    stream_names = {t: f"{packed_stream(t)}{suffix}" for t in types}
    shape_vector = f"{PACKED_SHAPES}{suffix}"
    count = {t: sum(o.elem_type == t for o in outs) for t in types}
    minus_one = f"{prefix}/flat"
    nodes.append(_constant(minus_one, np.array([-1], np.int64)))
    flats: dict[int, list[str]] = {}
    shapes = []
    for out in outs:
        # A type's only output is its stream, and a model's only shape is the shape vector.
        flat = stream_names[out.elem_type] if count[out.elem_type] == 1 else f"{out.name}/flat"
        shape = shape_vector if len(outs) == 1 else f"{out.name}/shape"
        nodes.append(helper.make_node("Reshape", [out.name, minus_one], [flat], name=f"{out.name}/flatten"))
        nodes.append(helper.make_node("Shape", [out.name], [shape], name=f"{out.name}/shape"))
        flats.setdefault(out.elem_type, []).append(flat)
        shapes.append(shape)
    for t in types:
        if count[t] == 0:
            nodes.append(_empty(stream_names[t], _Out(stream_names[t], t, 1)))
        elif count[t] > 1:
            nodes.append(helper.make_node("Concat", flats[t], [stream_names[t]], axis=0, name=f"{stream_names[t]}/concat"))
    if len(outs) > 1:
        nodes.append(helper.make_node("Concat", shapes, [shape_vector], axis=0, name=f"{shape_vector}/concat"))
    elif not outs:
        nodes.append(_empty(shape_vector, _Out(shape_vector, TensorProto.INT64, 1)))
    graph_outputs = {o.name for o in graph.output}
    value_info = tuple(v for v in graph.value_info if v.name not in graph_outputs)
    return _Leaf(nodes, [*(stream_names[t] for t in types), shape_vector], tuple(graph.initializer), value_info)


def _group_leaf(group: Group, types: list[int], slots: list[_Out], at: str | None) -> _Leaf:
    """One group of models, reading the packed input streams and writing the packed output streams.

    The inputs are unpacked and the shared prefix runs once; then the member's
    own tail runs, chosen among the group's tails by a table of positions when
    there are several. The streams are named ``<stream><at>``, by default
    ``<stream>@dispatch/model<i>`` for the group's first model i.
    """
    first = group.members[0]
    suffix = f"@dispatch/model{first}" if at is None else at
    head = _unpack_inputs(group.prefix.input) + list(group.prefix.node)
    prefix_weights, prefix_info = tuple(group.prefix.initializer), tuple(group.prefix.value_info)
    if len(group.tails) == 1:
        leaf = _pack_outputs(group.tails[0].graph, f"dispatch/model{first}", types, suffix)
        return _Leaf(head + leaf.nodes, leaf.outputs, prefix_weights + leaf.initializers,
                     prefix_info + leaf.value_info)
    tag = f"group{first}"
    position = {m: k for k, tail in enumerate(group.tails) for m in tail.members}
    tails = [_pack_outputs(t.graph, f"dispatch/model{t.members[0]}", types, f"@dispatch/model{t.members[0]}")
             for t in group.tails]
    select = f"dispatch/{tag}/tail"
    nodes = head + _select(select, [position.get(i, 0) for i in range(max(position) + 1)])
    outputs = [f"{o.name}{suffix}" for o in slots]
    nodes += _tree(0, len(tails), tag, tails, [slots for _ in tails], True, select, outputs)
    return _Leaf(nodes, outputs, prefix_weights, prefix_info)


def _select(name: str, table: list[int]) -> list[onnx.NodeProto]:
    """Nodes that look the request's index up in ``table``, giving the branch position ``name``."""
    return [
        _constant(f"{name}/table", np.array(table, np.int64)),
        helper.make_node("Gather", [f"{name}/table", _INDEX_INT64], [name], axis=0, name=f"{name}/gather"),
    ]


def _tree(
    lo: int,
    hi: int,
    tag: str,
    leaves: list[_Leaf],
    outs: list[list[_Out]],
    shared: bool,
    selector: str = _INDEX_INT64,
    top: list[str] | None = None,
) -> list[onnx.NodeProto]:
    """Nodes that run leaf ``selector`` for lo <= selector < hi.

    The top ``If``'s outputs are named ``top``; by default the root's carry the
    graph's output names. With ``shared`` outputs (the packed layout) every leaf
    fills the same slots, so a branch returns its subtree's outputs and nothing
    else; otherwise a branch returns empties for the models of the other side.
    """
    mid = (lo + hi) // 2
    split = f"dispatch/{tag}/split"
    cond = f"dispatch/{tag}/cond"
    slots = outs[lo] if shared else [o for j in range(lo, hi) for o in outs[j]]

    def named(o: _Out, at: str) -> str:
        return o.name if at == "root" else f"{o.name}@{at}"

    branches = []
    for side, (a, b) in (("then", (lo, mid)), ("else", (mid, hi))):
        sub_tag = f"{tag}.{side}"
        weights: tuple[TensorProto, ...] = ()
        value_info: tuple[onnx.ValueInfoProto, ...] = ()
        if b - a == 1:
            leaf = leaves[a]
            body, produced, weights, value_info = leaf.nodes, leaf.outputs, leaf.initializers, leaf.value_info
        else:
            body = _tree(a, b, sub_tag, leaves, outs, shared, selector)
            sub_slots = outs[a] if shared else [o for j in range(a, b) for o in outs[j]]
            produced = [named(o, sub_tag) for o in sub_slots]
        if shared:
            names, empties = produced, []
        else:
            names, empties = _fill(lo, hi, a, b, sub_tag, outs, produced)
        graph_outs = [_symbolic(n, o) for n, o in zip(names, slots)]
        branches.append(
            helper.make_graph(
                [*body, *empties], sub_tag, [], graph_outs, initializer=list(weights), value_info=list(value_info)
            )
        )
    return [
        _constant(split, np.array([mid], np.int64)),
        helper.make_node("Less", [selector, split], [cond], name=f"dispatch/{tag}/less"),
        helper.make_node(
            "If",
            [cond],
            top or [named(o, tag) for o in slots],
            name=f"dispatch/{tag}/if",
            then_branch=branches[0],
            else_branch=branches[1],
        ),
    ]


def _fill(lo, hi, a, b, tag, outs, produced) -> tuple[list[str], list[onnx.NodeProto]]:
    """Public layout: a branch's outputs for models lo..hi, empty for those outside a..b."""
    names, empties = [], []
    produced_iter = iter(produced)
    for j in range(lo, hi):
        for o in outs[j]:
            if a <= j < b:
                names.append(next(produced_iter))
            else:
                empty = f"{o.name}@{tag}:empty"
                empties.append(_empty(empty, o))
                names.append(empty)
    return names, empties


def _empty(name: str, out: _Out) -> onnx.NodeProto:
    dtype = helper.tensor_dtype_to_np_dtype(out.elem_type)
    return _constant(name, np.zeros((0,) * out.rank if out.rank else (), dtype))


def _constant(name: str, value: np.ndarray) -> onnx.NodeProto:
    """A constant beside the node that reads it: a value of an enclosing graph would be an
    implicit input of every ``If`` between them, which onnxruntime gathers on every run."""
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(value), name=f"{name}/const")
