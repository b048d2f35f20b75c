"""Shared computation: models that begin with the same nodes over the same weights run them once.

Identical weights are stored once whatever this pass does (``weights``), but
storage is not memory: onnxruntime creates a kernel per node, and a kernel that
prepacks its weight (MatMul, Gemm …) holds its own packed copy. Two heads on one
backbone, or the same model fused twice, would hold the backbone's packed
weights once per model. This pass finds, across models, the nodes that compute
the same values from the same inputs, so the packed dispatch can run them in
one place for every model of the group and branch only where the models differ.

Rules:
- A value's signature is structural: a graph input by its position and type,
  an initializer by its type, shape and contents, a node's output by its
  operator, attributes, input signatures and position. Names do not count.
- A node that holds a subgraph (``If``, ``Loop``) is never shared.
- Models join a group only when they have the same input signature (in the
  packed layout they then read the same input slots), and only when the nodes they
  share consume at least ``min_shared_bytes`` of weights: below that, the extra
  branch a group needs costs more than the memory it saves.
- Members whose outputs have the same signatures are one computation: they
  share their tail too.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import onnx
from onnx import numpy_helper

from ..graph import initializer_bytes, mapping_renamer, rename_values, subgraphs, tensor_nbytes

MIN_SHARED_BYTES = 64 * 1024


@dataclass(frozen=True)
class Tail:
    """What one or more members compute after the shared prefix, named as the group's first member names
    the prefix's values; ``members`` are the subgraph indices it serves."""

    members: tuple[int, ...]
    graph: onnx.GraphProto


@dataclass(frozen=True)
class Group:
    """Models that run ``prefix`` once. ``prefix`` holds the first member's graph inputs, the nodes it
    shares with every other member, and the initializers those nodes read; a group of one model has
    an empty prefix and its whole graph as its tail."""

    prefix: onnx.GraphProto
    tails: tuple[Tail, ...]
    #: Initializers of the members that the group holds no copy of, as their twins serve them; and their bytes.
    shared_weights: int = 0
    shared_bytes: int = 0

    @property
    def members(self) -> tuple[int, ...]:
        return tuple(sorted(m for tail in self.tails for m in tail.members))


def _digest(*parts: bytes) -> bytes:
    h = hashlib.sha256()
    for part in parts:
        h.update(len(part).to_bytes(8, "little"))
        h.update(part)
    return h.digest()


def _attribute_bytes(node: onnx.NodeProto) -> bytes:
    out = []
    for attr in sorted(node.attribute, key=lambda a: a.name):
        a = onnx.AttributeProto()
        a.CopyFrom(attr)
        a.t.ClearField("name")  # a Constant's tensor carries its (namespaced) name
        out.append(a.SerializeToString(deterministic=True))
    return b"".join(out)


def signatures(graph: onnx.GraphProto) -> dict[str, bytes]:
    """The structural signature of every value of ``graph`` (see the module's rules)."""
    sig: dict[str, bytes] = {}
    for position, info in enumerate(graph.input):
        sig[info.name] = _digest(b"input", str(position).encode(), info.type.SerializeToString(deterministic=True))
    for tensor in graph.initializer:
        data = numpy_helper.to_array(tensor).tobytes()
        sig[tensor.name] = _digest(b"init", str((tensor.data_type, tuple(tensor.dims))).encode(), data)
    for node in graph.node:
        if any(True for _ in subgraphs(node)) or any(name and name not in sig for name in node.input):
            node_sig = _digest(b"unique", *(name.encode() for name in node.output))  # namespaced: unique
        else:
            node_sig = _digest(
                node.op_type.encode(), node.domain.encode(), _attribute_bytes(node),
                *(sig[name] if name else b"" for name in node.input),
            )
        for position, name in enumerate(node.output):
            if name:
                sig[name] = _digest(node_sig, str(position).encode())
    return sig


def _input_signature(graph: onnx.GraphProto) -> tuple[bytes, ...]:
    return tuple(info.type.SerializeToString(deterministic=True) for info in graph.input)


def _is_shared(node: onnx.NodeProto, sig: dict[str, bytes], common: set[bytes]) -> bool:
    return bool(node.output) and all(not o or sig[o] in common for o in node.output)


def _prefix_nodes(graph: onnx.GraphProto, sig: dict[str, bytes], common: set[bytes]) -> list[onnx.NodeProto]:
    return [n for n in graph.node if _is_shared(n, sig, common)]


def _weighed(graph: onnx.GraphProto, sig: dict[str, bytes]) -> set[bytes]:
    """The signatures of the values computed by the nodes of ``graph`` that read an initializer."""
    weights = {t.name for t in graph.initializer}
    return {sig[o] for n in graph.node if any(name in weights for name in n.input) for o in n.output if o}


def group_models(graphs: Sequence[onnx.GraphProto], min_shared_bytes: int = MIN_SHARED_BYTES) -> list[Group]:
    """Group the models that share a prefix; every model is in exactly one group, in index order.

    Args:
        graphs: Model i's namespaced graph (inputs, initializers, nodes, outputs).
        min_shared_bytes: The least weight the shared nodes must read for models to be grouped.
    """
    sigs = [signatures(g) for g in graphs]
    node_sigs = [{sig[o] for n in g.node for o in n.output if o} for g, sig in zip(graphs, sigs)]
    weighed = [_weighed(g, sig) for g, sig in zip(graphs, sigs)]
    members: list[list[int]] = []
    commons: list[set[bytes]] = []
    for i, graph in enumerate(graphs):
        for k, group in enumerate(members):
            first = group[0]
            if _input_signature(graphs[first]) != _input_signature(graph):
                continue
            common = commons[k] & node_sigs[i]
            # Shared nodes that read no weight cannot reach min_shared_bytes: distinct models (most pairs of a
            # multi-tenant fusion) are told apart here, without walking the group's graph once per pair.
            if min_shared_bytes > 0 and not common & weighed[first]:
                continue
            shared = _prefix_nodes(graphs[first], sigs[first], common)
            if initializer_bytes([graphs[first]], read_by=shared) >= min_shared_bytes:
                group.append(i)
                commons[k] = common
                break
        else:
            members.append([i])
            commons.append(set(node_sigs[i]))
    return [_group(graphs, sigs, group, common) for group, common in zip(members, commons)]


def _group(graphs: Sequence[onnx.GraphProto], sigs: list[dict[str, bytes]], group: list[int],
           common: set[bytes]) -> Group:
    first = graphs[group[0]]
    if len(group) == 1:
        empty = onnx.helper.make_graph([], first.name, list(first.input), [])
        return Group(empty, (Tail((group[0],), first),))
    shared = _prefix_nodes(first, sigs[group[0]], common)
    names = {sigs[group[0]][o]: o for n in shared for o in n.output if o}
    prefix = _subgraph(first, shared, list(first.input), [])
    tails: dict[tuple[bytes, ...], list[int]] = {}
    for m in group:
        tails.setdefault(tuple(sigs[m][o.name] for o in graphs[m].output), []).append(m)
    out = []
    for ms in tails.values():
        graph, sig = graphs[ms[0]], sigs[ms[0]]
        renames = {i.name: f.name for i, f in zip(graph.input, first.input)}
        renames.update({o: names[sig[o]] for n in graph.node for o in n.output if o and sig[o] in names})
        rest = [n for n in graph.node if not _is_shared(n, sig, common)]
        tail = _subgraph(graph, rest, [], list(graph.output))
        rename_values(tail, mapping_renamer(renames))
        out.append(Tail(tuple(ms), tail))
    kept = {t.members[0]: {w.name for w in t.graph.initializer} for t in out}
    dropped = [w for m in group[1:] for w in graphs[m].initializer if w.name not in kept.get(m, ())]
    return Group(prefix, tuple(out), len(dropped), sum(tensor_nbytes(w) for w in dropped))


def _subgraph(graph: onnx.GraphProto, nodes: list[onnx.NodeProto], inputs: list, outputs: list) -> onnx.GraphProto:
    """``nodes`` of ``graph`` with the initializers and value infos they use."""
    used = {name for node in nodes for name in node.input} | {o.name for o in outputs}
    produced = {name for node in nodes for name in node.output}
    return onnx.helper.make_graph(
        nodes, graph.name, inputs, outputs,
        initializer=[t for t in graph.initializer if t.name in used],
        value_info=[v for v in graph.value_info if v.name in produced and v.name not in {o.name for o in outputs}],
    )
