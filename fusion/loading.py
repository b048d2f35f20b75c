"""Loading the source models of a build: regular ONNX files, their external data confined to their folder.

Everything that can be known before the weights are read is checked first, so a
bad model costs no memory: the path is a regular file, the file parses as an
ONNX model, every tensor kept as external data names a regular file inside the
model's folder (no absolute path, no ``..``, no symbolic link) and lies inside
it, and the models together fit in one protobuf (a fused model is one).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath

import onnx
from google.protobuf.message import DecodeError

from popfuse.runtime.display import human_size

from .config import ModelSpec, not_a_regular_file
from .errors import FusionError
from .graph import subgraphs

#: The most a protobuf message (an ONNX model, and so a fused model) can hold.
MAX_PROTOBUF_BYTES = (1 << 31) - 1


@dataclass(frozen=True)
class _External:
    """A tensor whose data lies in another file: the tensor, that file, and the bytes it takes."""

    tensor: onnx.TensorProto
    path: Path
    size: int


def load_models(specs: Sequence[ModelSpec]) -> list[onnx.ModelProto]:
    """Load every model of a build, external data included, after checking all of them.

    Raises:
        FusionError: a path is not a regular file, a file is not an ONNX model, external data lies outside
            its model's folder or is missing, or the models are too large to fuse; naming the model, the file
            and, for external data, the tensor.
    """
    opened = [_open(spec) for spec in specs]
    total = sum(spec.path.stat().st_size + sum(e.size for e in external) for spec, (_, external) in zip(specs, opened))
    if total > MAX_PROTOBUF_BYTES:
        sizes = ", ".join(f"{s.options.name} {human_size(s.path.stat().st_size + sum(e.size for e in ext))}"
                          for s, (_, ext) in zip(specs, opened))
        raise FusionError(
            f"the models take {human_size(total)} together ({sizes}); a fused model is one ONNX protobuf, which "
            f"holds at most 2 GB, and popfuse does not yet keep a fused model's weights outside it. Hint: fuse "
            "fewer or smaller models per artifact, or convert large ones to fp16 before fusing"
        )
    for spec, (model, external) in zip(specs, opened):
        for item in external:
            _read_external(spec, item)
        _internalize(model)
    return [model for model, _ in opened]


def _open(spec: ModelSpec) -> tuple[onnx.ModelProto, list[_External]]:
    name, path = spec.options.name, spec.path
    problem = not_a_regular_file(path)
    if problem:
        raise FusionError(f"model {name!r}: {problem}; expected an .onnx file")
    size = path.stat().st_size
    if size > MAX_PROTOBUF_BYTES:
        raise FusionError(
            f"model {name!r}: {str(path)!r} is {human_size(size)}; an ONNX file holds at most 2 GB (larger models "
            "keep their weights as external data)"
        )
    not_onnx = f"model {name!r}: {str(path)!r} is not an ONNX model"
    try:
        model = onnx.load(path, load_external_data=False)
    except DecodeError as e:
        raise FusionError(f"{not_onnx}: protobuf cannot parse it ({e})") from e
    except OSError as e:
        raise FusionError(f"model {name!r}: cannot read {str(path)!r}: {e.strerror or e}") from e
    if size == 0:
        raise FusionError(f"{not_onnx}: the file is empty")
    if not model.HasField("graph") or not model.opset_import or model.ir_version <= 0:
        raise FusionError(
            f"{not_onnx}: it parses, but has no graph, IR version or opset (a tensor or another protobuf?). "
            "Hint: export the model with torch.onnx.export, paddle2onnx or tf2onnx"
        )
    return model, [_external(spec, tensor) for tensor in _tensors(model) if _is_external(tensor)]


def _is_external(tensor: onnx.TensorProto) -> bool:
    return tensor.HasField("data_location") and tensor.data_location == onnx.TensorProto.EXTERNAL


def _external(spec: ModelSpec, tensor: onnx.TensorProto) -> _External:
    """Where ``tensor``'s data lies, checked to be a regular file inside the model's folder."""
    info = {entry.key: entry.value for entry in tensor.external_data}
    location = info.get("location", "")
    where = f"model {spec.options.name!r}: tensor {tensor.name!r} keeps its data in {location!r}"
    folder = spec.path.parent
    relative = PurePath(location)
    if not location or relative.is_absolute() or ".." in relative.parts or location.startswith(("/", "\\")):
        raise FusionError(
            f"{where}, which is not a path inside the model's folder {str(folder)!r}; external data must lie beside "
            "the model (a relative path without '..')"
        )
    path = folder
    for part in relative.parts:
        path = path / part
        if path.is_symlink():
            raise FusionError(f"{where}: {str(path)!r} is a symbolic link; external data must be a regular file "
                              "inside the model's folder")
    problem = not_a_regular_file(path)
    if problem:
        raise FusionError(f"{where}: {problem}")
    size = path.stat().st_size
    try:
        offset = int(info.get("offset", 0))
        length = int(info["length"]) if "length" in info else size - offset
    except ValueError:
        raise FusionError(f"{where}: its offset or length is not a number") from None
    if offset < 0 or length < 0 or offset + length > size:
        raise FusionError(f"{where}: {length} bytes at offset {offset} lie outside {str(path)!r} ({size} bytes)")
    return _External(tensor, path, length)


def _read_external(spec: ModelSpec, item: _External) -> None:
    info = {entry.key: entry.value for entry in item.tensor.external_data}
    try:
        with open(item.path, "rb") as f:
            f.seek(int(info.get("offset", 0)))
            item.tensor.raw_data = f.read(item.size)
    except OSError as e:
        raise FusionError(
            f"model {spec.options.name!r}: tensor {item.tensor.name!r}: cannot read {str(item.path)!r}: "
            f"{e.strerror or e}"
        ) from e


def _internalize(model: onnx.ModelProto) -> None:
    """Mark the tensors whose data was read as holding it, as ``onnx.load`` does."""
    for tensor in _tensors(model):
        if _is_external(tensor):
            tensor.data_location = onnx.TensorProto.DEFAULT
            del tensor.external_data[:]


def _tensors(model: onnx.ModelProto) -> Iterator[onnx.TensorProto]:
    """Every tensor of the model: initializers and attribute tensors, in nested graphs and functions too."""
    yield from _graph_tensors(model.graph)
    for function in model.functions:
        for node in function.node:
            yield from _node_tensors(node)


def _graph_tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield from (sparse.values, sparse.indices)
    for node in graph.node:
        yield from _node_tensors(node)


def _node_tensors(node: onnx.NodeProto) -> Iterator[onnx.TensorProto]:
    for attr in node.attribute:
        if attr.HasField("t"):
            yield attr.t
        yield from attr.tensors
        if attr.HasField("sparse_tensor"):
            yield from (attr.sparse_tensor.values, attr.sparse_tensor.indices)
    for sub in subgraphs(node):
        yield from _graph_tensors(sub)
