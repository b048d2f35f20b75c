"""The dispatch structure: N model graphs behind a balanced tree of ``If`` operators.

In both layouts one ``index`` input (uint32, [1]) selects the subgraph, and a
tree of ``If`` picks it: balanced (depth ceil(log2 N)) in the public layout;
in the packed one, cheap models sit nearer the root (``cost_aware_splits``). They differ in the interface:
- ``public`` (what ``fuse`` returns): every model input is an
  ``optional(tensor)`` graph input ``graph{i}/<name>``, so a request feeds only
  its own model's inputs and onnxruntime needs no dummies for the rest; each
  model runs in an ``If`` of its own (see ``_leaf``), below the tree, so that it
  reads plain tensors and keeps onnxruntime's memory planning. Graph outputs
  are ``graph{i}/<name>``, as PopRT names them. A branch returns empty tensors for the outputs of the
  models it does not run; graph outputs declare symbolic dimensions so those
  empties never disagree with a declared shape (onnxruntime would warn on every
  run). Every request passes through outputs for all N models.
- ``packed`` (what the compiler compiles): inputs and outputs travel in
  *slots*, a few graph inputs and outputs of undeclared rank that every model
  shares: a model's k-th input of a data type is fed to that type's input slot
  k, and its k-th output of a type comes back in that type's output slot k.
  Every ``If`` then reads and returns those few values whatever N is, so a
  request costs O(log N); the slots are plain tensors, always fed (the unused
  ones with empty arrays), so a model's branch keeps onnxruntime's memory
  planning, and no node packs, cuts or reshapes anything on the way.
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
from .weights import tensor_nbytes

INDEX = "index"
_INDEX_INT64 = "dispatch/index_int64"
_GROUP = "dispatch/group"


def input_slot(elem_type: int, k: int) -> str:
    """The packed-layout input that carries a model's k-th input of this element type."""
    return f"slot_in/{popef_from_onnx(elem_type)}/{k}"


def output_slot(elem_type: int, k: int) -> str:
    """The packed-layout output that carries a model's k-th output of this element type."""
    return f"slot/{popef_from_onnx(elem_type)}/{k}"


def slot_positions(values: Sequence[onnx.ValueInfoProto]) -> list[tuple[int, int]]:
    """(element type, k) of each value: the slot it travels in, values of a type counted in order."""
    seen: dict[int, int] = {}
    out = []
    for v in values:
        t = v.type.tensor_type.elem_type
        out.append((t, seen.get(t, 0)))
        seen[t] = seen.get(t, 0) + 1
    return out


@dataclass(frozen=True)
class _Out:
    name: str
    elem_type: int
    rank: int | None  # None: undeclared (a slot)


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
        in_slots = _slots([g.input for g in graphs], input_slot)
        slots = _slots([g.output for g in graphs], output_slot)
        groups = group_models(graphs) if groups is None else groups
        at = "" if len(groups) == 1 else None  # a single leaf writes the graph outputs itself
        leaves = [_group_leaf(group, slots, at) for group in groups]
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
        splits = cost_aware_splits([_weight_bytes(g) for g in groups]) if packed else None
        nodes += _tree(0, len(leaves), "root", leaves, per_model, shared, selector, splits=splits)
    inputs = [helper.make_tensor_value_info(INDEX, TensorProto.UINT32, [1])]
    if packed:
        inputs += [_symbolic(slot.name, slot) for slot in in_slots]
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
    if out.rank is None:
        return helper.make_tensor_value_info(name, out.elem_type, None)
    return helper.make_tensor_value_info(name, out.elem_type, [f"{out.name}:{d}" for d in range(out.rank)])


def _slots(per_model: Sequence[Sequence[onnx.ValueInfoProto]], name) -> list[_Out]:
    """The slots the models' values need: per type, as many as the model with most values of that type has."""
    count: dict[int, int] = {}
    for values in per_model:
        for t, k in slot_positions(values):
            count[t] = max(count.get(t, 0), k + 1)
    return [_Out(name(t, k), t, None) for t in sorted(count) for k in range(count[t])]


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


def _fill_slots(graph: onnx.GraphProto, slots: list[_Out], suffix: str) -> _Leaf:
    """``graph``'s nodes, its outputs renamed ``<slot><suffix>`` for the output slots they travel in.

    An output that no node of ``graph`` makes (a weight) gets an ``Identity``;
    a slot the model leaves unused gets an empty tensor.
    """
    g = onnx.GraphProto()
    g.CopyFrom(graph)
    produced = {name for node in g.node for name in node.output}
    targets = [f"{output_slot(t, k)}{suffix}" for t, k in slot_positions(graph.output)]
    renames = {out.name: target for out, target in zip(graph.output, targets) if out.name in produced}
    rename_values(g, mapping_renamer(renames))
    nodes = list(g.node)
    nodes += [helper.make_node("Identity", [out.name], [target], name=f"{target}/alias")
              for out, target in zip(graph.output, targets) if out.name not in produced]
    nodes += [_empty(f"{s.name}{suffix}", s) for s in slots if f"{s.name}{suffix}" not in targets]
    outputs = set(renames.values())
    value_info = tuple(v for v in g.value_info if v.name not in outputs)
    return _Leaf(nodes, [f"{s.name}{suffix}" for s in slots], tuple(g.initializer), value_info)


def _group_leaf(group: Group, slots: list[_Out], at: str | None) -> _Leaf:
    """One group of models, reading the input slots and writing the output slots.

    The shared prefix runs once; then the member's own tail runs, chosen among
    the group's tails by a table of positions when there are several. The
    outputs are named ``<slot><at>``, by default ``<slot>@dispatch/model<i>``
    for the group's first model i.
    """
    first = group.members[0]
    suffix = f"@dispatch/model{first}" if at is None else at
    # The members read their inputs straight from the slots: no node stands between a request and its model.
    to_slots = mapping_renamer({i.name: input_slot(t, k)
                                for i, (t, k) in zip(group.prefix.input, slot_positions(group.prefix.input))})
    prefix = onnx.GraphProto()
    prefix.CopyFrom(group.prefix)
    rename_values(prefix, to_slots)
    tails = []
    for tail in group.tails:
        g = onnx.GraphProto()
        g.CopyFrom(tail.graph)
        rename_values(g, to_slots)
        tails.append(g)
    head = list(prefix.node)
    prefix_weights, prefix_info = tuple(prefix.initializer), tuple(prefix.value_info)
    if len(tails) == 1:
        leaf = _fill_slots(tails[0], slots, suffix)
        return _Leaf(head + leaf.nodes, leaf.outputs, prefix_weights + leaf.initializers,
                     prefix_info + leaf.value_info)
    tag = f"group{first}"
    position = {m: k for k, tail in enumerate(group.tails) for m in tail.members}
    leaves = [_fill_slots(g, slots, f"@dispatch/model{t.members[0]}") for g, t in zip(tails, group.tails)]
    select = f"dispatch/{tag}/tail"
    nodes = head + _select(select, [position.get(i, 0) for i in range(max(position) + 1)])
    outputs = [f"{o.name}{suffix}" for o in slots]
    nodes += _tree(0, len(leaves), tag, leaves, [slots for _ in leaves], True, select, outputs)
    return _Leaf(nodes, outputs, prefix_weights, prefix_info)


# Beyond this many leaves the tree stays balanced: the search below takes cubic time.
_MAX_SEARCHED = 64


def cost_aware_splits(costs: Sequence[float]) -> dict[tuple[int, int], int] | None:
    """Where the dispatch tree over leaves 0..n divides each range it has, or None for the balanced tree.

    Each ``If`` level costs a request a few microseconds, which matters in
    proportion to the model's own time. The tree kept is the alphabetic one
    (leaves in index order, so one comparison with the index picks a side)
    that minimises the sum over leaves of depth / cost: cheap models sit nearer
    the root. Equal costs give the balanced tree (ties split in the middle).
    """
    n = len(costs)
    if n < 3 or n > _MAX_SEARCHED or len(set(costs)) == 1:
        return None
    weight = [0.0]
    for c in costs:
        weight.append(weight[-1] + 1.0 / max(c, 1.0))
    best: dict[tuple[int, int], float] = {(i, i + 1): 0.0 for i in range(n)}
    splits: dict[tuple[int, int], int] = {}
    for length in range(2, n + 1):
        for lo in range(n - length + 1):
            hi, mid = lo + length, lo + length // 2
            totals = {s: best[lo, s] + best[s, hi] for s in range(lo + 1, hi)}
            least = min(totals.values())
            split = min((s for s, t in totals.items() if t <= least * (1 + 1e-9)), key=lambda s: (abs(s - mid), s))
            best[lo, hi] = totals[split] + weight[hi] - weight[lo]
            splits[lo, hi] = split
    return splits


def _weight_bytes(group: Group) -> float:
    """What a group's models weigh, as a proxy of their run time: the bytes of their initializers."""
    graphs = [group.prefix, *(t.graph for t in group.tails)]
    return float(sum(tensor_nbytes(t) for g in graphs for t in g.initializer))


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
    splits: dict[tuple[int, int], int] | None = None,
) -> list[onnx.NodeProto]:
    """Nodes that run leaf ``selector`` for lo <= selector < hi.

    The top ``If``'s outputs are named ``top``; by default the root's carry the
    graph's output names. ``splits`` gives where each range divides (see
    ``cost_aware_splits``); by default the tree is balanced. With ``shared`` outputs (the packed layout) every leaf
    fills the same slots, so a branch returns its subtree's outputs and nothing
    else; otherwise a branch returns empties for the models of the other side.
    """
    mid = splits[lo, hi] if splits else (lo + hi) // 2
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
            body = _tree(a, b, sub_tag, leaves, outs, shared, selector, splits=splits)
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
    shape = (0,) if out.rank is None else (0,) * out.rank
    return _constant(name, np.zeros(shape, dtype))


def _constant(name: str, value: np.ndarray) -> onnx.NodeProto:
    """A constant beside the node that reads it: a value of an enclosing graph would be an
    implicit input of every ``If`` between them, which onnxruntime gathers on every run."""
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(value), name=f"{name}/const")
