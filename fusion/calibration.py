"""Representative inputs ("calibration") for a model: loaded from ``.npz`` files, given in memory, or generated.

fp16 chooses which nodes keep float32 by running the model on these inputs
(``passes.precision``). Each ``.npz`` holds one request: an array per model
input, named by the input. Without any, ``generated`` makes one request whose
float inputs are uniform in [-1, 1) (seed 0), the range normalised inputs
(images, features) mostly take and the default of Polygraphy and of TensorRT
Model Optimizer's AutoCast. Such a request reaches smaller activations than real
data does (docs/fusion.md gives the figures), which the range rule's margin
allows for; it says little of the model's answer, which real requests check.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from .errors import ConfigError, FusionError
from .graph import graph_inputs

# A dimension the model leaves open: the first (the batch) is 1, any other this size, which leaves room
# for models that downsample by 32.
_OPEN_BATCH, _OPEN_DIM = 1, 64


@dataclass(frozen=True)
class Calibration:
    """Requests that represent a model's inputs.

    Attributes:
        requests: One mapping per request, from the model's input names to arrays.
        source: Where they came from, for reports: file names, ``memory`` or ``generated``.
    """

    requests: tuple[Mapping[str, np.ndarray], ...]
    source: str

    @property
    def generated(self) -> bool:
        return self.source == GENERATED


GENERATED = "generated"


def load_calibration(paths: str | os.PathLike | Sequence[str | os.PathLike], where: str = "calibration") -> Calibration:
    """Read one request per ``.npz`` file.

    Args:
        paths: A file, or several.
        where: What names the setting in errors (``config.yaml: model_fusion[0]: key 'calibration'``).

    Raises:
        ConfigError: naming ``where`` and the file: missing, not an ``.npz`` of arrays, or empty.
    """
    files = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    if not files:
        raise ConfigError(f"{where}: expected a path to an .npz file or a list of them, received an empty list")
    return Calibration(tuple(_read_npz(Path(f), where) for f in files), ", ".join(Path(f).name for f in files))


def _read_npz(path: Path, where: str) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise ConfigError(f"{where}: calibration file {str(path)!r} not found")
    try:
        archive = np.load(path, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise ValueError("it holds one array, not arrays named by input")
        with archive:
            arrays = {name: archive[name] for name in archive.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError, NotImplementedError) as e:
        raise ConfigError(
            f"{where}: cannot read {str(path)!r} as a NumPy .npz archive of arrays named by the model's inputs "
            f"({e}). Hint: write it with numpy.savez(path, x=array)"
        ) from e
    if not arrays:
        raise ConfigError(f"{where}: calibration file {str(path)!r} holds no arrays")
    return arrays


def as_calibration(data: Any, where: str = "calibration") -> Calibration | None:
    """Calibration from what an API user gives: None, a path, a mapping of arrays, or a list of either.

    Raises:
        ConfigError: a path is unreadable, or ``data`` is none of these.
    """
    if data is None or isinstance(data, Calibration):
        return data
    if isinstance(data, (str, os.PathLike)):
        return load_calibration(data, where)
    items = [data] if isinstance(data, Mapping) else list(data) if isinstance(data, (list, tuple)) else None
    if not items:
        raise ConfigError(
            f"{where}: expected an .npz path, a mapping of input name to array, or a list of them, "
            f"received {type(data).__name__}"
        )
    requests = []
    for item in items:
        if isinstance(item, (str, os.PathLike)):
            requests.append(_read_npz(Path(item), where))
        elif isinstance(item, Mapping):
            requests.append({str(k): np.asarray(v) for k, v in item.items()})
        else:
            raise ConfigError(
                f"{where}: each request must be an .npz path or a mapping, received {type(item).__name__}"
            )
    return Calibration(tuple(requests), "memory")


def generated(model: onnx.ModelProto) -> Calibration:
    """One request for ``model``: floats uniform in [-1, 1) (seed 0), zeros for other types, open dimensions
    1 (the first) or 64."""
    rng = np.random.default_rng(0)
    request = {}
    for info in graph_inputs(model.graph):
        dtype = _dtype(info)
        shape = tuple(
            size if size >= 0 else (_OPEN_BATCH if k == 0 else _OPEN_DIM) for k, size in enumerate(_dims(info))
        )
        request[info.name] = (
            rng.uniform(-1.0, 1.0, shape).astype(dtype) if dtype.kind == "f" else np.zeros(shape, dtype)
        )
    return Calibration((request,), GENERATED)


def checked(calibration: Calibration, model: onnx.ModelProto) -> tuple[dict[str, np.ndarray], ...]:
    """The requests in the model's own input types (float32 for float inputs).

    Raises:
        FusionError: a request lacks an input or names one the model lacks, or an array's type, rank or a
            fixed dimension does not match; the message names the source, the input, expected and received.
    """
    inputs = {i.name: i for i in graph_inputs(model.graph)}
    out = []
    for k, request in enumerate(calibration.requests):
        label = f"calibration {calibration.source!r}" + (f", request {k}" if len(calibration.requests) > 1 else "")
        missing = [n for n in inputs if n not in request]
        unknown = [n for n in request if n not in inputs]
        if missing or unknown:
            problems = [f"lacks the model's input(s) {', '.join(map(repr, missing))}"] if missing else []
            if unknown:
                problems.append(f"has array(s) {', '.join(map(repr, unknown))} that are no input of the model")
            raise FusionError(f"{label}: {'; '.join(problems)}. The model's inputs: {', '.join(inputs)}")
        out.append({name: _match(np.asarray(request[name]), inputs[name], label) for name in inputs})
    return tuple(out)


def _match(array: np.ndarray, info: onnx.ValueInfoProto, label: str) -> np.ndarray:
    dtype = _dtype(info)
    dims = _dims(info)
    kinds = {"f": "fiu", "i": "iub", "u": "iub", "b": "b"}.get(dtype.kind, dtype.kind)
    if array.dtype.kind not in kinds:
        raise FusionError(f"{label}: input {info.name!r} takes {dtype.name}, received an array of {array.dtype.name}")
    if array.ndim != len(dims) or any(d >= 0 and d != s for d, s in zip(dims, array.shape)):
        raise FusionError(
            f"{label}: input {info.name!r} takes shape {dims} (-1: any size), received {list(array.shape)}"
        )
    return array.astype(dtype, copy=False)


def _dims(info: onnx.ValueInfoProto) -> list[int]:
    """The input's dimensions, -1 for an open one (a name, nothing, or the -1 some exporters write)."""
    return [d.dim_value if d.HasField("dim_value") and d.dim_value >= 0 else -1
            for d in info.type.tensor_type.shape.dim]


def _dtype(info: onnx.ValueInfoProto) -> np.dtype:
    elem_type = info.type.tensor_type.elem_type
    try:
        return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type))
    except (KeyError, TypeError) as e:
        raise FusionError(f"input {info.name!r} has an element type fp16 cannot calibrate ({elem_type})") from e
