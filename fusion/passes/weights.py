"""Weight placement in a compiled executable: each distinct tensor stored once, outside the graph.

``externalize_weights`` runs on the backend's *compiled* graph, after its
optimisations. Every tensor of ``min_bytes`` or more, in any graph, keeps its
place (its ``If`` branch) but leaves the protobuf for one payload, the
artifact's ``weights`` tensor blob, referenced as ONNX external data. Identical
tensors (the same model fused twice, two heads on one backbone) are found here,
after optimisation, so sharing costs no layout optimisation; they get one
name, ``weights/<n>``, and one place in the payload. The runtime then hands the
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
from dataclasses import dataclass

import onnx
from onnx import numpy_helper

from ..rename import mapping_renamer, rename_values, subgraphs

SHARED_PREFIX = "weights/"
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


def tensor_nbytes(tensor: onnx.TensorProto) -> int:
    """Bytes of data a tensor holds, whatever field stores it."""
    count = 1
    for d in tensor.dims:
        count *= d
    return count * onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize


def _data(tensor: onnx.TensorProto) -> bytes:
    return tensor.raw_data if tensor.HasField("raw_data") else numpy_helper.to_array(tensor).tobytes()


def externalize_weights(
    model: onnx.ModelProto, location: str, min_bytes: int = EXTERNAL_MIN_BYTES
) -> tuple[onnx.ModelProto, ExternalWeights]:
    """Move the data of every initializer of ``min_bytes`` or more into one payload, identical ones once.

    Each such tensor, wherever it is, is renamed ``weights/<n>`` (the same name
    for the same contents) and becomes ONNX external data at ``location``, its
    data aligned to 64 bytes in the payload. A tensor that a graph returns as
    one of its outputs keeps its name and its data. Renaming also separates
    tensors that optimisers gave the same name in sibling branches.

    Returns:
        The new model, and the payload with its table of contents.
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    payload = bytearray()
    placed: dict[tuple[int, tuple[int, ...], bytes], ExternalTensor] = {}
    numbers = itertools.count()
    shared = [0, 0]

    def place(tensor: onnx.TensorProto) -> ExternalTensor:
        data = _data(tensor)
        key = (tensor.data_type, tuple(tensor.dims), hashlib.sha256(data).digest())
        if key in placed:
            shared[0] += 1
            shared[1] += len(data)
            return placed[key]
        payload.extend(b"\0" * (-len(payload) % _ALIGN))
        entry = ExternalTensor(
            f"{SHARED_PREFIX}{next(numbers)}", tensor.data_type, tuple(tensor.dims), len(payload), len(data)
        )
        payload.extend(data)
        placed[key] = entry
        return entry

    def visit(graph: onnx.GraphProto) -> None:
        for node in graph.node:
            for sub in subgraphs(node):
                visit(sub)
        returned = {o.name for o in graph.output}
        renames: dict[str, str] = {}
        named: set[str] = set()
        repeated: list[int] = []
        for position, tensor in enumerate(graph.initializer):
            if (
                tensor.name in returned
                or tensor.data_type == onnx.TensorProto.STRING
                or tensor_nbytes(tensor) < min_bytes
            ):
                continue
            entry = place(tensor)
            if entry.name in named:
                repeated.append(position)  # the same contents twice in one graph: one initializer serves both
            named.add(entry.name)
            renames[tensor.name] = entry.name
            for field in _DATA_FIELDS:
                tensor.ClearField(field)
            tensor.data_location = onnx.TensorProto.EXTERNAL
            del tensor.external_data[:]
            for key, value in (("location", location), ("offset", str(entry.offset)), ("length", str(entry.size))):
                item = tensor.external_data.add()
                item.key, item.value = key, value
        for position in reversed(repeated):
            del graph.initializer[position]
        if renames:
            rename_values(graph, mapping_renamer(renames))

    visit(out.graph)
    return out, ExternalWeights(bytes(payload), tuple(placed.values()), shared[0], shared[1])
