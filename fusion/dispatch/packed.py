"""The packed layout: what the compiler compiles.

Inputs and outputs travel in *slots*, a few graph inputs and outputs of
undeclared rank that every model shares: a model's k-th input of a data type
is fed to that type's input slot k, and its k-th output of a type comes back in
that type's output slot k (``slot_positions``). Every ``If`` then reads and
returns those few values whatever N is, so a request costs O(log N). The slots
are plain tensors, always fed (the unused ones with empty arrays), so a model's
branch keeps onnxruntime's memory planning, and no node packs, cuts or reshapes
anything on the way.

Models that begin with the same nodes over the same weights form a group
(``sharing``): the group's leaf runs the shared prefix once, then the member's
own tail, chosen by a table of positions. The tree chooses among groups, cheap
ones nearer the root (``tree.cost_aware_splits``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import onnx
from onnx import helper

from popfuse.runtime.dtypes import popef_from_onnx

from .. import naming
from ..graph import copy_graph, initializer_bytes, mapping_renamer, rename_values
from .nodes import Leaf, Out, cast_index, empty, index_input, lookup, symbolic
from .sharing import Group, group_models
from .tree import IfTree, cost_aware_splits


def slot_positions(values: Sequence[onnx.ValueInfoProto]) -> list[tuple[str, int]]:
    """(PopEF data type, k) of each value: the slot it travels in, values of a type counted in order."""
    seen: dict[str, int] = {}
    out = []
    for v in values:
        t = popef_from_onnx(v.type.tensor_type.elem_type)
        out.append((t, seen.get(t, 0)))
        seen[t] = seen.get(t, 0) + 1
    return out


def packed_graph(graphs: Sequence[onnx.GraphProto], groups: Sequence[Group] | None = None) -> onnx.GraphProto:
    """The fused main graph in the packed layout.

    Args:
        graphs: Model i's namespaced graph; its initializers stay in its branch.
        groups: The models that share computation (``sharing.group_models``); None groups them here.
    """
    in_slots = _slots([g.input for g in graphs], naming.input_slot)
    slots = _slots([g.output for g in graphs], naming.output_slot)
    groups = group_models(graphs) if groups is None else groups
    nodes = [cast_index()]
    if len(groups) == 1:
        leaf = _group_leaf(groups[0], slots, lambda slot: slot)  # a single leaf writes the graph outputs itself
        nodes += leaf.nodes
        initializers, value_info = list(leaf.initializers), list(leaf.value_info)
    else:
        selector = naming.INDEX_INT64
        if len(groups) < len(graphs):  # the tree chooses among groups: the index names a group
            position = {m: k for k, group in enumerate(groups) for m in group.members}
            nodes += lookup(naming.GROUP, [position[i] for i in range(len(graphs))])
            selector = naming.GROUP
        leaves = [_group_leaf(group, slots, _at_model(group.members[0])) for group in groups]
        splits = cost_aware_splits([float(initializer_bytes([g.prefix, *(t.graph for t in g.tails)])) for g in groups])
        nodes += _SlotTree(leaves, selector, slots, splits).nodes("root", [s.name for s in slots])
        initializers, value_info = [], []
    inputs = [index_input()] + [symbolic(s.name, s) for s in in_slots]
    return helper.make_graph(
        nodes, "popfuse_fusion", inputs, [symbolic(s.name, s) for s in slots],
        initializer=initializers, value_info=value_info,
    )


class _SlotTree(IfTree):
    """Every leaf fills the same slots, so a branch returns its subtree's slots and nothing else."""

    def __init__(self, leaves: Sequence[Leaf], selector: str, slots: list[Out], splits=None):
        super().__init__(leaves, selector, splits)
        self.slots = slots

    def outputs(self, lo: int, hi: int) -> list[Out]:
        return self.slots


def _at_model(index: int) -> Callable[[str], str]:
    return lambda slot: naming.at(slot, naming.model_position(index))


def _slots(per_model: Sequence[Sequence[onnx.ValueInfoProto]], name: Callable[[str, int], str]) -> list[Out]:
    """The slots the models' values need: per type, as many as the model with most values of that type has."""
    count: dict[str, tuple[int, int]] = {}
    for values in per_model:
        for v, (t, k) in zip(values, slot_positions(values)):
            count[t] = (v.type.tensor_type.elem_type, max(count.get(t, (0, 0))[1], k + 1))
    return [Out(name(t, k), elem_type, None) for t, (elem_type, n) in sorted(count.items()) for k in range(n)]


def _fill_slots(graph: onnx.GraphProto, slots: list[Out], place: Callable[[str], str]) -> Leaf:
    """``graph``'s nodes, its outputs renamed ``place(slot)`` for the output slots they travel in.

    An output that no node of ``graph`` makes (a weight) gets an ``Identity``;
    a slot the model leaves unused gets an empty tensor.
    """
    g = copy_graph(graph)
    produced = {name for node in g.node for name in node.output}
    targets = [place(naming.output_slot(t, k)) for t, k in slot_positions(graph.output)]
    renames = {out.name: target for out, target in zip(graph.output, targets) if out.name in produced}
    rename_values(g, mapping_renamer(renames))
    nodes = list(g.node)
    nodes += [helper.make_node("Identity", [out.name], [target], name=naming.node(target, "alias"))
              for out, target in zip(graph.output, targets) if out.name not in produced]
    nodes += [empty(place(s.name), s) for s in slots if place(s.name) not in targets]
    outputs = set(renames.values())
    value_info = tuple(v for v in g.value_info if v.name not in outputs)
    return Leaf(nodes, [place(s.name) for s in slots], tuple(g.initializer), value_info)


def _group_leaf(group: Group, slots: list[Out], place: Callable[[str], str]) -> Leaf:
    """One group of models, reading the input slots and writing the output slots, named ``place(slot)``.

    The shared prefix runs once; then the member's own tail runs, chosen among
    the group's tails by a table of positions when there are several.
    """
    # The members read their inputs straight from the slots: no node stands between a request and its model.
    to_slots = mapping_renamer({i.name: naming.input_slot(t, k)
                                for i, (t, k) in zip(group.prefix.input, slot_positions(group.prefix.input))})
    prefix = copy_graph(group.prefix)
    rename_values(prefix, to_slots)
    tails = []
    for tail in group.tails:
        g = copy_graph(tail.graph)
        rename_values(g, to_slots)
        tails.append(g)
    head = list(prefix.node)
    prefix_weights, prefix_info = tuple(prefix.initializer), tuple(prefix.value_info)
    if len(tails) == 1:
        leaf = _fill_slots(tails[0], slots, place)
        return Leaf(head + leaf.nodes, leaf.outputs, prefix_weights + leaf.initializers,
                    prefix_info + leaf.value_info)
    first = group.members[0]
    position = {m: k for k, tail in enumerate(group.tails) for m in tail.members}
    leaves = [_fill_slots(g, slots, _at_model(t.members[0])) for g, t in zip(tails, group.tails)]
    select = naming.tails(first)
    nodes = head + lookup(select, [position.get(i, 0) for i in range(max(position) + 1)])
    outputs = [place(s.name) for s in slots]
    nodes += _SlotTree(leaves, select, slots).nodes(f"group{first}", outputs)
    return Leaf(nodes, outputs, prefix_weights, prefix_info)
