"""The gRPC adapter over a real grpc.aio server on loopback, driven by tritonclient.grpc and raw calls."""

from __future__ import annotations

import os
import time

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tritonclient.grpc import service_pb2, service_pb2_grpc

from popfuse.runtime import Runner, RuntimeConfig
from popfuse.runtime.server.access import Restriction
from popfuse.runtime.server.errors import BadRequestError
from popfuse.runtime.server.grpc import Malformed, decode_request
from tests.models import PPOCR, batch_model, ppocr_input, scale_model

from .conftest import named


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """One server for the module: models a (scale 2) and b (batched double), gRPC and HTTP."""
    from popfuse.fusion import compile_artifact, fuse_models
    from popfuse.runtime.artifact import write_artifact
    from popfuse.runtime.server.settings import BatchingConfig

    from .conftest import RunningServer, server_settings

    path = tmp_path_factory.mktemp("grpc") / "pair.popef"
    write_artifact(path, compile_artifact(fuse_models([scale_model(2.0), batch_model()], named("a", "b")),
                                          "onnxruntime-cpu"))
    settings = server_settings(grpc=True, batching={"b": BatchingConfig(4, 1000)},
                               grpc_restricted=(Restriction.parse("model-repository:admin-key=s3cret"),))
    server = RunningServer([path], settings)
    yield server
    server.stop()


def stub(server) -> service_pb2_grpc.GRPCInferenceServiceStub:
    return service_pb2_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(server.grpc_url))


def test_tritonclient_grpc_round_trip_for_every_ppocr_model_matches_the_runner(serve, ppocr_build):
    server = serve({"ppocr": ppocr_build.popef_path}, grpc=True)
    client = triton.InferenceServerClient(server.grpc_url)
    assert client.is_server_live() and client.is_server_ready()
    runner = Runner(server.artifacts[0], RuntimeConfig(validate_io_params=False))
    for i, name in enumerate(PPOCR):
        assert client.is_model_ready(name)
        meta = client.get_model_metadata(name, as_json=True)
        assert [t["name"] for t in meta["inputs"]] == ["x"]
        output = meta["outputs"][0]["name"]
        x = ppocr_input(name, seed=3)
        want = runner.execute({f"graph{i}/x": x})[f"graph{i}/{output}"]
        tensor = triton.InferInput("x", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x)
        result = client.infer(name, [tensor], outputs=[triton.InferRequestedOutput(output)])
        np.testing.assert_array_equal(result.as_numpy(output), want)
    config = client.get_model_config("cls", as_json=True)["config"]
    assert config["input"] == [{"name": "x", "data_type": "TYPE_FP32", "dims": ["-1", "3", "-1", "-1"]}]


def test_typed_contents_and_raw_contents_give_the_same_answer(pair):
    x = np.arange(4, dtype=np.float32).reshape(1, 4)
    typed = service_pb2.ModelInferRequest(model_name="a", id="t1")
    typed.inputs.add(name="X", datatype="FP32", shape=[1, 4]).contents.fp32_contents.extend(x.reshape(-1).tolist())
    raw = service_pb2.ModelInferRequest(model_name="a")
    raw.inputs.add(name="X", datatype="FP32", shape=[1, 4])
    raw.raw_input_contents.append(x.tobytes())
    answers = [stub(pair).ModelInfer(r) for r in (typed, raw)]
    for answer in answers:
        out = np.frombuffer(answer.raw_output_contents[0], np.float32).reshape(list(answer.outputs[0].shape))
        np.testing.assert_array_equal(out, x * 2 + np.arange(4))
    assert answers[0].id == "t1"


def test_stream_infer_answers_every_request_and_reports_errors_on_the_stream(pair):
    client = triton.InferenceServerClient(pair.grpc_url)
    answers = []
    client.start_stream(callback=lambda result, error: answers.append((result, error)))
    try:
        for k in range(6):
            x = np.full((1, 4), k, np.float32)
            tensor = triton.InferInput("X", [1, 4], "FP32")
            tensor.set_data_from_numpy(x)
            client.async_stream_infer("b", [tensor], request_id=str(k))
        bad = triton.InferInput("X", [1, 5], "FP32")
        bad.set_data_from_numpy(np.ones((1, 5), np.float32))
        client.async_stream_infer("b", [bad], request_id="bad")
    finally:
        client.stop_stream()
    results = {r.get_response().id: r.as_numpy("O") for r, e in answers if e is None}
    errors = [str(e) for r, e in answers if e is not None]
    assert sorted(results) == [str(k) for k in range(6)]
    for k, out in results.items():
        np.testing.assert_array_equal(out, np.full((1, 4), 2.0 * int(k)))
    assert len(errors) == 1 and "expected shape [?, 4], received [1, 5]" in errors[0]


def test_config_statistics_index_and_versions(pair):
    client = triton.InferenceServerClient(pair.grpc_url)
    config = client.get_model_config("b", as_json=True)["config"]
    assert config["max_batch_size"] == 4 and config["dynamic_batching"]["max_queue_delay_microseconds"] == "1000"
    assert config["input"][0]["dims"] == ["4"]  # the batch dimension left out, as Triton does when it batches
    x = np.ones((1, 4), np.float32)
    tensor = triton.InferInput("X", [1, 4], "FP32")
    tensor.set_data_from_numpy(x)
    client.infer("a", [tensor], model_version="1")
    stats = client.get_inference_statistics("a", as_json=True)["model_stats"][0]["inference_stats"]
    assert {"success", "queue", "compute_input", "compute_infer", "compute_output"} <= set(stats)
    with pytest.raises(triton.InferenceServerException, match="has no version '7'") as failed:
        client.infer("a", [tensor], model_version="7")
    assert failed.value.status() == "StatusCode.NOT_FOUND"
    assert not client.is_model_ready("a", "7") and not client.is_model_ready("nope")
    with pytest.raises(triton.InferenceServerException, match="not supported by this server") as failed:
        client.get_system_shared_memory_status()
    assert failed.value.status() == "StatusCode.UNIMPLEMENTED"


def test_a_restricted_repository_refuses_an_unload_without_the_key(pair):
    client = triton.InferenceServerClient(pair.grpc_url)
    with pytest.raises(triton.InferenceServerException, match="model-repository API is restricted") as failed:
        client.unload_model("pair")
    assert failed.value.status() == "StatusCode.PERMISSION_DENIED"
    with pytest.raises(triton.InferenceServerException, match="restricted"):
        client.unload_model("pair", headers={"admin-key": "wrong"})
    assert client.is_model_ready("a")  # nothing changed
    assert client.get_model_repository_index(headers={"admin-key": "s3cret"})
    client.load_model("pair", headers={"admin-key": "s3cret"})  # reload, with the key
    assert client.is_model_ready("a") and client.is_model_ready("b")


def test_bytes_that_do_not_parse_are_invalid_argument_not_internal(pair):
    channel = grpc.insecure_channel(pair.grpc_url)
    call = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
    with pytest.raises(grpc.RpcError) as failed:
        call(b"\x0a\xff\xff\xff\xff\xff")  # a length-delimited field longer than the message
    assert failed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid protobuf message" in failed.value.details()


_datatypes = st.sampled_from(["FP32", "FP16", "INT8", "INT32", "INT64", "UINT8", "UINT64", "BOOL", "BYTES", "", "x"])
_tensors = st.fixed_dictionaries({
    "name": st.sampled_from(["X", "x", "", "graph0/X"]),
    "datatype": _datatypes,
    "shape": st.lists(st.integers(-2, 5), max_size=4),
    "values": st.lists(st.integers(-(2**40), 2**40), max_size=24),
    "raw": st.one_of(st.none(), st.binary(max_size=48)),
})


def _message(tensors: list[dict]) -> service_pb2.ModelInferRequest:
    message = service_pb2.ModelInferRequest(model_name="a")
    for t in tensors:
        tensor = message.inputs.add(name=t["name"], datatype=t["datatype"], shape=t["shape"])
        if t["raw"] is not None:
            message.raw_input_contents.append(t["raw"])
        elif t["datatype"] in ("INT8", "INT32"):
            tensor.contents.int_contents.extend(v % 2**31 for v in t["values"])
        elif t["datatype"] == "INT64":
            tensor.contents.int64_contents.extend(t["values"])
        else:
            tensor.contents.fp32_contents.extend(float(v) for v in t["values"])
    return message


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_tensors, max_size=3))
def test_fuzz_the_grpc_decoder_gives_a_request_or_a_bad_request(tensors):
    try:
        request = decode_request(_message(tensors))
    except BadRequestError:
        return
    for array in request.inputs.values():
        assert isinstance(array, np.ndarray)
    with pytest.raises(BadRequestError, match="not a valid protobuf"):
        decode_request(Malformed(ValueError("truncated")))


def _open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(st.one_of(st.binary(max_size=64), st.lists(_tensors, max_size=2).map(lambda t: _message(t).SerializeToString())))
def test_fuzz_over_the_wire_never_a_server_error(pair, payload):
    channel = grpc.insecure_channel(pair.grpc_url)
    call = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
    try:
        call(payload, timeout=30)
    except grpc.RpcError as e:
        assert e.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND), (e.code(), e.details())
    finally:
        channel.close()


def test_refused_calls_leak_no_descriptor(pair):
    before = _open_descriptors()
    channel = grpc.insecure_channel(pair.grpc_url)
    call = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
    good = _message([{"name": "X", "datatype": "FP32", "shape": [1, 4], "values": [1] * 4, "raw": None}])
    for payload in (b"\xff" * 9, b"", good.SerializeToString()) * 30:
        try:
            call(payload, timeout=30)
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.INVALID_ARGUMENT
    channel.close()
    assert _open_descriptors() <= before + 2


def test_connections_past_the_cap_are_refused_and_idle_ones_are_closed(serve):
    server = serve({"a": [scale_model(2.0)]}, grpc=True, max_connections=2, body_timeout_s=1.0)

    def connect() -> service_pb2_grpc.GRPCInferenceServiceStub:
        # A channel of its own connection (channels to one address share one by default).
        channel = grpc.insecure_channel(server.grpc_url, options=[("grpc.use_local_subchannel_pool", 1)])
        return service_pb2_grpc.GRPCInferenceServiceStub(channel)

    live = service_pb2.ServerLiveRequest()
    first, second, third = connect(), connect(), connect()
    assert first.ServerLive(live, timeout=10).live and second.ServerLive(live, timeout=10).live
    with pytest.raises(grpc.RpcError) as refused:
        third.ServerLive(live, timeout=10)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    time.sleep(2.5)  # the first two, idle past the body timeout, are closed: a new connection fits
    assert connect().ServerLive(live, timeout=10, wait_for_ready=True).live
    assert first.ServerLive(live, timeout=10, wait_for_ready=True).live  # and a closed one reconnects


def test_a_busy_port_is_a_clear_error():
    import asyncio
    import socket

    from popfuse.runtime.server.dataplane import DataPlane
    from popfuse.runtime.server.errors import ServerConfigError
    from popfuse.runtime.server.grpc import start_server
    from popfuse.runtime.server.repository import FixedRepository
    from popfuse.runtime.server.settings import ServerSettings

    from .toys import SumModel

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        settings = ServerSettings(grpc_port=busy.getsockname()[1])
        dataplane = DataPlane(settings, lambda attach: FixedRepository([SumModel()], attach))
        with pytest.raises(ServerConfigError, match="the port is in use.*choose another --grpc-port"):
            asyncio.run(start_server(dataplane, settings))
