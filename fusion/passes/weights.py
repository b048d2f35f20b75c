"""Weight placement in a compiled executable: each distinct tensor stored once, outside the graph.

``externalize_weights`` runs on the backend's *compiled* graph, after its
optimisations. Every tensor of ``min_bytes`` or more, in any graph, keeps its
place (its ``If`` branch) but leaves the protobuf for one payload, the
artifact's ``weights`` tensor blob, referenced as ONNX external data. Identical
tensors (the same model fused twice, two heads on one backbone) are found here,
after optimisation, so sharing costs no layout optimisation; they get one
name (``naming.shared_weight``) and one place in the payload. The runtime then hands the
payload to the backend as arrays that stay where the artifact is mapped, one per
name, instead of letting the backend read a copy per branch.

Why the weights stay in their branches: every value a branch reads from an
enclosing graph is an implicit input that each ``If`` on the way gathers on
every run (about 0.4 us apiece), so weights hoisted to the main graph cost the
smallest model the gathering of every other model's weights. Measured on the
PP-OCR fusion against plain sessions (see docs/fusion.md): hoisted weights
gave dispatch +5-8% and resident memory 0.88x; weights in their branches but
read by onnxruntime from the protobuf gave dispatch at parity and memory 2.4x,
as onnxruntime holds a branch's initializers twice or more; weights in their
branches and handed over in place give both.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable
from dataclasses import dataclass

import onnx
from onnx import numpy_helper

from .. import naming
from ..graph import copy_model, mapping_renamer, rename_values, subgraphs, tensor_nbytes
from ..pipeline import PassResult

EXTERNAL_MIN_BYTES = 1024
_ALIGN = 64
_DATA_FIELDS = ("raw_data", "float_data", "int32_data", "int64_data", "double_data", "uint64_data")


@dataclass(frozen=True)
class ExternalTensor:
    """Where one external tensor lies in the payload."""

    name: str
    data_type: int
    dims: tuple[int, ...]
    offset: int
    size: int


@dataclass(frozen=True)
class ExternalWeights:
    """The payload ``externalize_weights`` moved out of a model, and what it found to share."""

    payload: bytes
    tensors: tuple[ExternalTensor, ...]
    shared: int
    shared_bytes: int


def _data(tensor: onnx.TensorProto) -> bytes:
    return tensor.raw_data if tensor.HasField("raw_data") else numpy_helper.to_array(tensor).tobytes()


#: Whether the backend copies a node's constant input into memory of its own when it
#: opens the executable: (node, input index, tensor) -> bool.
CopiedAtLoad = Callable[[onnx.NodeProto, int, onnx.TensorProto], bool]


@dataclass
class _Found:
    """One initializer to move out, where it is, and when a run first reads it."""

    tensor: onnx.TensorProto
    graph: onnx.GraphProto
    position: int
    key: tuple[int, tuple[int, ...], bytes]
    first_read: tuple[int, ...]
    copied: bool


def externalize_weights(
    model: onnx.ModelProto,
    location: str,
    min_bytes: int = EXTERNAL_MIN_BYTES,
    copied_at_load: CopiedAtLoad | None = None,
) -> PassResult[ExternalWeights]:
    """Move the data of every initializer of ``min_bytes`` or more into one payload, identical ones once.

    Each such tensor, wherever it is, is renamed ``naming.shared_weight(n)`` (the same name
    for the same contents) and becomes ONNX external data at ``location``, its
    data aligned to 64 bytes in the payload. A tensor that a graph returns as
    one of its outputs keeps its name and its data. Renaming also separates
    tensors that optimisers gave the same name in sibling branches.

    The payload is laid out in the order a run first reads the tensors, and
    those that ``copied_at_load`` says the backend copies when it opens the
    executable (onnxruntime prepacks a MatMul's B, for one) come last. The
    kernel maps a file's pages around each one a run reads, so a run then
    brings into memory the weights it reads and few of those it never touches.
    The order decides memory only, never results.

    Returns:
        The new model; details: the payload with its table of contents.
    """
    out = copy_model(model)
    found: list[_Found] = []

    def visit(graph: onnx.GraphProto, at: tuple[int, ...]) -> dict[str, list[tuple[int, onnx.NodeProto, int]]]:
        """Record ``graph``'s initializers to move out; returns, for each name ``graph`` or a
        graph inside it reads, the reading nodes as (position in ``graph``, node, input index).
        A read inside a nested graph counts at the position of the node that holds it, even
        where that graph has its own initializer of the name: such a weight may then sit
        elsewhere in the payload, which costs memory, never results."""
        reads: dict[str, list[tuple[int, onnx.NodeProto, int]]] = {}
        for position, node in enumerate(graph.node):
            for index, name in enumerate(node.input):
                reads.setdefault(name, []).append((position, node, index))
            for number, sub in enumerate(subgraphs(node)):  # each branch's weights together
                for name, uses in visit(sub, (*at, position, number)).items():
                    reads.setdefault(name, []).extend((position, n, i) for _, n, i in uses)
        returned = {o.name for o in graph.output}
        for position, tensor in enumerate(graph.initializer):
            if (
                tensor.name in returned
                or tensor.data_type == onnx.TensorProto.STRING
                or tensor_nbytes(tensor) < min_bytes
            ):
                continue
            uses = reads.get(tensor.name, [])
            copied = bool(uses) and copied_at_load is not None and all(
                copied_at_load(node, index, tensor) for _, node, index in uses
            )
            key = (tensor.data_type, tuple(tensor.dims), hashlib.sha256(_data(tensor)).digest())
            first = min((p for p, _, _ in uses), default=len(graph.node))
            found.append(_Found(tensor, graph, position, key, (*at, first), copied))
        return reads

    visit(out.graph, ())
    places, payload, shared = _lay_out(found)
    for _, in_one_graph in itertools.groupby(found, key=lambda f: id(f.graph)):
        _point_at_payload(list(in_one_graph), places, location)
    return PassResult(out, bool(found), ExternalWeights(bytes(payload), tuple(places.values()), *shared))


def _lay_out(found: list[_Found]) -> tuple[dict[tuple, ExternalTensor], bytearray, tuple[int, int]]:
    """One place per distinct contents: weights read in place first, in the order a run
    first reads them, then those the backend copies at load."""
    groups: dict[tuple, list[_Found]] = {}
    for f in found:
        groups.setdefault(f.key, []).append(f)
    order = sorted(groups.values(), key=lambda g: (all(f.copied for f in g), min(f.first_read for f in g)))
    payload = bytearray()
    places: dict[tuple, ExternalTensor] = {}
    for number, group in enumerate(order):
        tensor = group[0].tensor
        data = _data(tensor)
        payload.extend(b"\0" * (-len(payload) % _ALIGN))
        places[group[0].key] = ExternalTensor(
            naming.shared_weight(number), tensor.data_type, tuple(tensor.dims), len(payload), len(data)
        )
        payload.extend(data)
    repeats = [f for g in order for f in g[1:]]
    return places, payload, (len(repeats), sum(places[f.key].size for f in repeats))


def _point_at_payload(found: list[_Found], places: dict[tuple, ExternalTensor], location: str) -> None:
    """Turn one graph's ``found`` initializers into references to their places, one per contents."""
    graph = found[0].graph
    renames: dict[str, str] = {}
    named: set[str] = set()
    repeated: list[int] = []
    for f in found:
        entry = places[f.key]
        if entry.name in named:
            repeated.append(f.position)  # the same contents twice in one graph: one initializer serves both
        named.add(entry.name)
        renames[f.tensor.name] = entry.name
        for field in _DATA_FIELDS:
            f.tensor.ClearField(field)
        f.tensor.data_location = onnx.TensorProto.EXTERNAL
        del f.tensor.external_data[:]
        for key, value in (("location", location), ("offset", str(entry.offset)), ("length", str(entry.size))):
            item = f.tensor.external_data.add()
            item.key, item.value = key, value
    for position in reversed(repeated):
        del graph.initializer[position]
    rename_values(graph, mapping_renamer(renames))
