"""KServe v2 inference protocol: request and response types, and their wire codec.

The codec reads the JSON form and the binary tensor data extension (Triton's:
an ``Inference-Header-Content-Length`` header gives the JSON's length and the
tensors' bytes follow it, in input order), which is what ``tritonclient.http``
sends with ``binary_data=True``. It knows nothing about models: checking a
tensor against a model is the data plane's job.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..dtypes import kserve_from_numpy, numpy_from_kserve
from .errors import BadRequestError

HEADER_LENGTH = "Inference-Header-Content-Length"


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
        if not 0 <= header_length <= len(body):
            raise BadRequestError(
                f"{HEADER_LENGTH} is {header_length}, but the body has {len(body)} bytes"
            )
        header, binary = body[:header_length], memoryview(body)[header_length:]
    try:
        doc = json.loads(header)
    except (ValueError, UnicodeDecodeError) as e:
        raise BadRequestError(f"malformed JSON in the request: {e}") from None
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
    params = doc.get("parameters") or {}
    request = InferRequest(
        inputs=inputs,
        id=None if doc.get("id") is None else str(doc["id"]),
        binary_default=bool(params.get("binary_data_output", False)) if isinstance(params, dict) else False,
    )
    raw_outputs = doc.get("outputs")
    if raw_outputs is not None:
        if not isinstance(raw_outputs, list):
            raise BadRequestError("'outputs' must be a list of {'name': ...} objects")
        request.outputs = []
        for raw in raw_outputs:
            if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
                raise BadRequestError(f"each requested output needs a 'name', received {raw!r}")
            request.outputs.append(raw["name"])
            out_params = raw.get("parameters") or {}
            if isinstance(out_params, dict) and "binary_data" in out_params:
                request.binary[raw["name"]] = bool(out_params["binary_data"])
    return request


def _decode_tensor(raw: Any, position: int, binary: memoryview | bytes, offset: int) -> tuple[str, np.ndarray, int]:
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
        raise BadRequestError(f"inputs[{position}] needs a 'name', received {raw!r}"[:300])
    name = raw["name"]
    datatype = raw.get("datatype")
    dtype = numpy_from_kserve(datatype) if isinstance(datatype, str) else None
    if dtype is None:
        raise BadRequestError(f"input {name!r}: datatype {datatype!r} is not supported here")
    shape = raw.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise BadRequestError(f"input {name!r}: 'shape' must be a list of non-negative integers, received {shape!r}")
    count = math.prod(shape)
    params = raw.get("parameters") or {}
    size = params.get("binary_data_size") if isinstance(params, dict) else None
    if size is not None:
        expected = count * dtype.itemsize
        if size != expected:
            raise BadRequestError(
                f"input {name!r}: binary_data_size is {size}, but {datatype} {shape} needs {expected} bytes"
            )
        if offset + size > len(binary):
            raise BadRequestError(f"input {name!r}: the binary data ends before its {size} bytes")
        array = np.frombuffer(binary[offset : offset + size], dtype=dtype).reshape(shape)
        return name, array, size
    if "data" not in raw:
        raise BadRequestError(f"input {name!r} has neither 'data' nor a binary_data_size parameter")
    try:
        array = np.asarray(raw["data"], dtype=dtype)
    except (ValueError, TypeError) as e:
        raise BadRequestError(f"input {name!r}: 'data' is not {datatype}: {e}") from None
    if array.size != count:
        raise BadRequestError(f"input {name!r}: shape {shape} needs {count} values, received {array.size}")
    return name, array.reshape(shape), 0


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
