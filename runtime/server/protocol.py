"""KServe v2 inference protocol: request and response types, their JSON wire codec, and the tensor
checks every transport shares.

The codec reads the JSON form and the binary tensor data extension (Triton's:
an ``Inference-Header-Content-Length`` header gives the JSON's length and the
tensors' bytes follow it, in input order), which is what ``tritonclient.http``
sends with ``binary_data=True``. ``tensor_from_bytes`` and ``tensor_from_values``
turn one declared tensor into an array for the HTTP and the gRPC adapter alike.
The codec knows nothing about models: checking a tensor against a model is the
data plane's job.

Non-finite numbers travel as Triton sends them: ``NaN``, ``Infinity`` and
``-Infinity`` are read in request JSON and written in response JSON (as
Triton's parser and writer do, and its clients read). A finite number too large
for its datatype is refused.
"""

from __future__ import annotations

import json
import math
import re
import reprlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..dtypes import kserve_from_numpy, numpy_from_kserve
from .errors import BadRequestError

HEADER_LENGTH = "Inference-Header-Content-Length"

# A JSON number that a 64-bit float cannot hold: a positive exponent of three digits, or 309 digits in a row.
_HUGE_NUMBER = re.compile(rb"[0-9][eE]\+?0*[1-9][0-9]{2}|[0-9]{309}")

_brief = reprlib.Repr()
_brief.maxlevel, _brief.maxstring, _brief.maxother, _brief.maxlist, _brief.maxdict = 3, 40, 40, 4, 4


def brief(value: Any) -> str:
    """A client's value, shortened for an error message (however large or deeply nested it is)."""
    return _brief.repr(value)


@dataclass
class InferRequest:
    """One inference request: named input arrays and the outputs asked for.

    ``outputs`` is None when the request names none (every output is returned);
    ``binary`` says, per output, whether to return it as binary data.
    """

    inputs: dict[str, np.ndarray]
    id: str | None = None
    outputs: list[str] | None = None
    binary: dict[str, bool] = field(default_factory=dict)
    binary_default: bool = False


@dataclass
class InferResponse:
    """Named output arrays of one model run."""

    model_name: str
    outputs: dict[str, np.ndarray]
    id: str | None = None
    model_version: str = "1"


def decode_request(body: bytes, header_length: int | None) -> InferRequest:
    """Parse a request body (JSON, or JSON then binary tensors).

    Raises:
        BadRequestError: malformed JSON, a malformed tensor, or binary sizes that do not add up.
    """
    if header_length is None:
        header, binary = body, b""
    else:
        if header_length > len(body):
            raise BadRequestError(f"{HEADER_LENGTH} is {header_length}, but the body has {len(body)} bytes")
        header, binary = body[:header_length], memoryview(body)[header_length:]
    doc = _parse_json(header)
    if not isinstance(doc, dict):
        raise BadRequestError("the request must be a JSON object with an 'inputs' list")
    raw_inputs = doc.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise BadRequestError("the request needs a non-empty 'inputs' list")
    inputs: dict[str, np.ndarray] = {}
    offset = 0
    for position, raw in enumerate(raw_inputs):
        name, array, used = _decode_tensor(raw, position, binary, offset)
        if name in inputs:
            raise BadRequestError(f"input {name!r} appears twice in the request")
        inputs[name] = array
        offset += used
    if offset != len(binary):
        raise BadRequestError(f"the request carries {len(binary)} bytes of binary data, its inputs use {offset}")
    request_id = doc.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise BadRequestError(f"'id' must be a string, received {brief(request_id)}")
    params = _object(doc, "parameters", "the request")
    request = InferRequest(inputs=inputs, id=request_id,
                           binary_default=_flag(params, "binary_data_output", "the request's parameters"))
    raw_outputs = doc.get("outputs")
    if raw_outputs is not None:
        if not isinstance(raw_outputs, list):
            raise BadRequestError("'outputs' must be a list of {'name': ...} objects")
        request.outputs = []
        for raw in raw_outputs:
            if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
                raise BadRequestError(f"each requested output needs a 'name', received {brief(raw)}")
            request.outputs.append(raw["name"])
            out_params = _object(raw, "parameters", f"output {raw['name']!r}")
            if "binary_data" in out_params:
                request.binary[raw["name"]] = _flag(out_params, "binary_data", f"output {raw['name']!r}")
    return request


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"the number {text[:40]} is too large for a 64-bit float")
    return value


def _parse_json(header: bytes | memoryview) -> Any:
    header = bytes(header)
    try:
        # Python reads a number too large for a double as infinity; it is refused instead, as Triton's
        # parser does. Only a body that may hold one pays for the check on every float.
        if _HUGE_NUMBER.search(header):
            return json.loads(header, parse_float=_finite)
        return json.loads(header)
    except RecursionError:
        raise BadRequestError("malformed JSON in the request: it is nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise BadRequestError(f"malformed JSON in the request: {e}") from None


def _object(doc: dict, key: str, where: str) -> dict:
    value = doc.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadRequestError(f"{where}: {key!r} must be a JSON object, received {brief(value)}")
    return value


def _flag(params: dict, key: str, where: str) -> bool:
    value = params.get(key, False)
    if not isinstance(value, bool):
        raise BadRequestError(f"{where}: {key!r} must be true or false, received {brief(value)}")
    return value


def _decode_tensor(raw: Any, position: int, binary: memoryview | bytes, offset: int) -> tuple[str, np.ndarray, int]:
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
        raise BadRequestError(f"inputs[{position}] needs a 'name', received {brief(raw)}")
    name = raw["name"]
    datatype, shape = raw.get("datatype"), raw.get("shape")
    size = _object(raw, "parameters", f"input {name!r}").get("binary_data_size")
    if size is not None:
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise BadRequestError(f"input {name!r}: binary_data_size must be a byte count, received {brief(size)}")
        expected = tensor_nbytes(name, datatype, shape)
        if size != expected:
            raise BadRequestError(f"input {name!r}: binary_data_size is {size}, but {datatype} {shape} needs "
                                  f"{expected} bytes")
        if offset + size > len(binary):
            raise BadRequestError(f"input {name!r}: the binary data ends before its {size} bytes")
        return name, tensor_from_bytes(name, datatype, shape, binary[offset : offset + size]), size
    if "data" not in raw:
        raise BadRequestError(f"input {name!r} has neither 'data' nor a binary_data_size parameter")
    return name, tensor_from_values(name, datatype, shape, raw["data"]), 0


def tensor_dtype(name: str, datatype: Any) -> np.dtype:
    """The NumPy dtype of input ``name``'s KServe datatype.

    Raises:
        BadRequestError: not a datatype this server carries.
    """
    dtype = numpy_from_kserve(datatype) if isinstance(datatype, str) else None
    if dtype is None:
        raise BadRequestError(f"input {name!r}: datatype {brief(datatype)} is not supported here")
    return dtype


def tensor_shape(name: str, shape: Any) -> list[int]:
    """Input ``name``'s declared shape, checked.

    Raises:
        BadRequestError: not a list of non-negative integers.
    """
    if not isinstance(shape, Sequence) or isinstance(shape, str) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise BadRequestError(f"input {name!r}: 'shape' must be a list of non-negative integers, "
                              f"received {brief(shape)}")
    return list(shape)


def tensor_nbytes(name: str, datatype: Any, shape: Any) -> int:
    """The bytes input ``name`` of ``datatype`` and ``shape`` takes.

    Raises:
        BadRequestError: a bad datatype or shape.
    """
    return math.prod(tensor_shape(name, shape)) * tensor_dtype(name, datatype).itemsize


def tensor_from_bytes(name: str, datatype: Any, shape: Any, data: bytes | memoryview) -> np.ndarray:
    """Input ``name`` from its raw bytes (little-endian, row-major), as the binary extension and gRPC send it.

    Raises:
        BadRequestError: a bad datatype or shape, or a byte count that does not fit them.
    """
    dtype, shape = tensor_dtype(name, datatype), tensor_shape(name, shape)
    expected = tensor_nbytes(name, datatype, shape)
    if len(data) != expected:
        raise BadRequestError(f"input {name!r}: {datatype} {shape} needs {expected} bytes, received {len(data)}")
    return np.frombuffer(data, dtype=dtype).reshape(shape)


def tensor_from_values(name: str, datatype: Any, shape: Any, values: Any) -> np.ndarray:
    """Input ``name`` from a (nested) list of values, as JSON and gRPC's typed contents send it.

    Raises:
        BadRequestError: a bad datatype or shape, values of the wrong kind or count, or a value the
            datatype cannot hold.
    """
    dtype, shape = tensor_dtype(name, datatype), tensor_shape(name, shape)
    try:
        probe = np.asarray(values)
    except (ValueError, TypeError, RecursionError) as e:
        raise BadRequestError(f"input {name!r}: the data is not a list of {datatype} values: {e}") from None
    wanted = {"b": ("b", "true or false"), "i": ("biu", "integers"), "u": ("biu", "integers")}.get(
        dtype.kind, ("biuf", "numbers"))
    if probe.size and probe.dtype.kind not in wanted[0]:
        flat = probe.reshape(-1)
        if probe.dtype.kind == "O" and all(isinstance(v, int) and not isinstance(v, bool) for v in flat):
            big = next(v for v in flat if not -(2**63) <= v < 2**64)  # what NumPy could not hold
            raise BadRequestError(f"input {name!r}: the value {brief(big)} is out of {datatype}'s range")
        raise BadRequestError(f"input {name!r}: {datatype} data must be {wanted[1]}, received {brief(values)}")
    count = math.prod(shape)
    if probe.size != count:
        raise BadRequestError(f"input {name!r}: shape {shape} needs {count} values, received {probe.size}")
    try:
        with np.errstate(over="ignore"):
            array = np.asarray(values, dtype=dtype)
    except (OverflowError, ValueError, TypeError) as e:
        raise BadRequestError(f"input {name!r}: a value does not fit {datatype}: {e}") from None
    if dtype.kind == "f" and probe.dtype.kind in "biuf" and not np.isfinite(array).all():
        overflowed = np.isfinite(probe.astype(np.float64)) & ~np.isfinite(array)
        if overflowed.any():
            value = float(probe.reshape(-1)[overflowed.reshape(-1)][0])
            raise BadRequestError(f"input {name!r}: the value {value!r} is out of {datatype}'s range")
    return array.reshape(shape)


def encode_response(response: InferResponse, request: InferRequest) -> tuple[bytes, int | None]:
    """The response body, and the JSON header's length when binary outputs follow it (else None)."""
    outputs = []
    chunks = []
    for name, array in response.outputs.items():
        array = np.ascontiguousarray(array)
        entry: dict[str, Any] = {
            "name": name,
            "datatype": kserve_from_numpy(array.dtype),
            "shape": list(array.shape),
        }
        if request.binary.get(name, request.binary_default):
            # The array's own bytes go into the body: the join below is the only copy.
            entry["parameters"] = {"binary_data_size": array.nbytes}
            chunks.append(memoryview(array.reshape(-1)).cast("B"))
        else:
            entry["data"] = array.reshape(-1).tolist()
        outputs.append(entry)
    doc: dict[str, Any] = {"model_name": response.model_name, "model_version": response.model_version,
                           "outputs": outputs}
    if response.id is not None:
        doc["id"] = response.id
    header = json.dumps(doc, separators=(",", ":")).encode()
    if not chunks:
        return header, None
    return b"".join([header, *chunks]), len(header)
