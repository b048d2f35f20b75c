"""The KServe v2 codec: JSON and binary tensors in, JSON and binary tensors out, and its errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from popfuse.runtime.server.errors import BadRequestError
from popfuse.runtime.server.protocol import InferRequest, InferResponse, decode_request, encode_response


def test_json_tensors_round_trip():
    body = json.dumps({
        "id": "7",
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 2], "data": [[1, 2], [3, 4]]}],
        "outputs": [{"name": "y"}],
    }).encode()
    request = decode_request(body, None)
    assert request.id == "7" and request.outputs == ["y"]
    np.testing.assert_array_equal(request.inputs["x"], np.array([[1, 2], [3, 4]], np.float32))
    payload, header = encode_response(InferResponse("m", {"y": np.arange(3, dtype=np.int64)}, id="7"), request)
    assert header is None
    doc = json.loads(payload)
    assert doc["outputs"] == [{"name": "y", "datatype": "INT64", "shape": [3], "data": [0, 1, 2]}] and doc["id"] == "7"


def test_binary_tensors_round_trip():
    a = np.arange(6, dtype=np.float16).reshape(2, 3)
    b = np.array([True, False])
    header = json.dumps({
        "inputs": [
            {"name": "a", "datatype": "FP16", "shape": [2, 3], "parameters": {"binary_data_size": a.nbytes}},
            {"name": "b", "datatype": "BOOL", "shape": [2], "parameters": {"binary_data_size": b.nbytes}},
        ],
        "outputs": [{"name": "y", "parameters": {"binary_data": True}}],
    }).encode()
    request = decode_request(header + a.tobytes() + b.tobytes(), len(header))
    np.testing.assert_array_equal(request.inputs["a"], a)
    np.testing.assert_array_equal(request.inputs["b"], b)
    y = np.linspace(0, 1, 5, dtype=np.float32)
    payload, length = encode_response(InferResponse("m", {"y": y}), request)
    doc = json.loads(payload[:length])
    assert doc["outputs"][0]["parameters"] == {"binary_data_size": y.nbytes}
    np.testing.assert_array_equal(np.frombuffer(payload[length:], np.float32), y)


@pytest.mark.parametrize(
    "body, length, match",
    [
        (b"{not json", None, "malformed JSON"),
        (b"[]", None, "JSON object"),
        (b'{"inputs": []}', None, "non-empty 'inputs'"),
        (b'{"inputs": [{"name": "x", "datatype": "STRING", "shape": [1], "data": ["a"]}]}', None, "datatype 'STRING'"),
        (b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, -1], "data": [1]}]}', None, "non-negative"),
        (b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 2], "data": [1, 2, 3]}]}', None,
         r"shape \[2, 2\] needs 4 values, received 3"),
        (b'{"inputs": [{"name": "x", "datatype": "INT32", "shape": [1], "data": ["a"]}]}', None,
         "INT32 data must be integers"),
        (b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1]}]}', None, "neither 'data'"),
        (b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [2], "parameters": {"binary_data_size": 4}}]}',
         None, "needs 8 bytes"),
        (b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [2], "data": [1, 2]}, '
         b'{"name": "x", "datatype": "FP32", "shape": [2], "data": [1, 2]}]}', None, "appears twice"),
        (b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}]}', 999, "Inference-Header"),
    ],
)
def test_malformed_requests_name_the_problem(body, length, match):
    with pytest.raises(BadRequestError, match=match):
        decode_request(body, length)


def test_binary_bytes_must_add_up():
    header = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1],
                                     "parameters": {"binary_data_size": 4}}]}).encode()
    with pytest.raises(BadRequestError, match="ends before"):
        decode_request(header + b"\0\0", len(header))
    with pytest.raises(BadRequestError, match="carries 8 bytes of binary data, its inputs use 4"):
        decode_request(header + b"\0" * 8, len(header))


def test_request_level_binary_output_parameter():
    request = InferRequest(inputs={}, binary_default=True)
    payload, length = encode_response(InferResponse("m", {"y": np.ones(2, np.float32)}), request)
    assert length is not None and len(payload) == length + 8
