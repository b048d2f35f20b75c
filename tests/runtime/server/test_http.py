"""The server over real HTTP on loopback, driven by tritonclient and raw requests."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import tritonclient.http as triton
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from popfuse.runtime import Runner, RuntimeConfig
from popfuse.runtime.server.dataplane import DataPlane
from popfuse.runtime.server.repository import FixedRepository
from tests.concurrency import run_in_threads
from tests.models import PPOCR, batch_model, dynamic_model, ppocr_input, scale_model, slow_model
from tests.runtime.server.toys import ErrorModel

from .conftest import RunningServer, free_port, named, server_settings


def post(url: str, path: str, body: bytes | str, headers: dict | None = None) -> tuple[int, dict]:
    host, port = url.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    conn.request("POST", path, body=body, headers=headers or {})
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response.status, (json.loads(data) if data else {})


def get(url: str, path: str) -> tuple[int, bytes]:
    host, port = url.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    conn.request("GET", path)
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response.status, data


def infer_json(url, model, name, array, datatype="FP32"):
    body = json.dumps({"inputs": [{"name": name, "datatype": datatype, "shape": list(array.shape),
                                   "data": array.reshape(-1).tolist()}]})
    return post(url, f"/v2/models/{model}/infer", body)


def triton_infer(client, model, inputs: dict[str, np.ndarray], outputs: list[str], binary=True):
    request = []
    for name, array in inputs.items():
        tensor = triton.InferInput(name, list(array.shape), triton.np_to_triton_dtype(array.dtype))
        tensor.set_data_from_numpy(array, binary_data=binary)
        request.append(tensor)
    wanted = [triton.InferRequestedOutput(n, binary_data=binary) for n in outputs]
    result = client.infer(model, request, outputs=wanted)
    return {n: result.as_numpy(n) for n in outputs}


def test_tritonclient_round_trip_for_every_ppocr_model(serve, ppocr_build):
    server = serve({"ppocr": ppocr_build.popef_path})
    client = triton.InferenceServerClient(server.url)
    assert client.is_server_live() and client.is_server_ready()
    runner = Runner(server.artifacts[0], RuntimeConfig(validate_io_params=False))
    for i, name in enumerate(PPOCR):
        assert client.is_model_ready(name)
        meta = client.get_model_metadata(name)
        assert [t["name"] for t in meta["inputs"]] == ["x"]
        output = meta["outputs"][0]["name"]
        x = ppocr_input(name, seed=5)
        want = runner.execute({f"graph{i}/x": x})[f"graph{i}/{output}"]
        for binary in (True, False):
            got = triton_infer(client, name, {"x": x}, [output], binary=binary)[output]
            np.testing.assert_array_equal(got, want)


def test_concurrent_mixed_load_matches_every_response(serve):
    server = serve({"mix": [scale_model(2.0), scale_model(3.0), dynamic_model()]},
                   {"mix": named("two", "three", "relu")})

    def client_thread(seed: int) -> None:
        rng = np.random.default_rng(seed)
        client = triton.InferenceServerClient(server.url)
        for _ in range(250):
            model = ("two", "three", "relu")[int(rng.integers(3))]
            if model == "relu":
                x = rng.standard_normal((int(rng.integers(1, 5)), 4)).astype(np.float32)
                want = np.maximum(x, 0)
            else:
                x = rng.standard_normal((1, 4)).astype(np.float32)
                want = x * (2.0 if model == "two" else 3.0) + np.arange(4)
            got = triton_infer(client, model, {"X": x}, ["O"])["O"]
            np.testing.assert_allclose(got, want, rtol=1e-6)

    run_in_threads(client_thread, 8)
    stats = server.dataplane.statistics()["model_stats"]
    assert sum(s["inference_stats"]["success"]["count"] for s in stats) == 2000


def test_bad_requests_get_4xx_and_other_models_keep_serving(serve):
    server = serve({"pair": [scale_model(2.0), scale_model(3.0, n=3)]}, {"pair": named("a", "b")}, max_body_bytes=4096)
    url = server.url
    good = np.ones((1, 4), np.float32)
    cases = [
        (infer_json(url, "nope", "X", good), 404, "unknown model 'nope'"),
        (infer_json(url, "a", "Z", good), 400, "no input 'Z'"),
        (infer_json(url, "a", "X", good.astype(np.float64), "FP64"), 400, "expected dtype FP32, received FP64"),
        (infer_json(url, "a", "X", np.ones((2, 4), np.float32)), 400, r"expected shape [1, 4]"),
        (post(url, "/v2/models/a/infer", "{not json"), 400, "malformed JSON"),
        (post(url, "/v2/models/a/infer", json.dumps({"inputs": [
            {"name": "X", "datatype": "FP32", "shape": [1, 4], "data": [0.0] * 4},
            {"name": "pad", "datatype": "FP32", "shape": [2000], "data": [0.0] * 2000}]})), 413, "limit"),
        (infer_json(url, "a", "graph1/X", good), 400, "no input 'graph1/X'"),
        (infer_json(url, "a", "index", np.array([1], np.uint32), "UINT32"), 400, "no input 'index'"),
        (infer_json(url, "b", "X", good), 400, "expected shape [1, 3]"),
        (post(url, "/v2/models/a/infer", json.dumps({"inputs": [{"name": "X", "datatype": "FP32", "shape": [1, 4],
                                                              "data": [0.0] * 4}], "outputs": [{"name": "Q"}]})),
         400, "no output 'Q'"),
        (post(url, "/v2/models/a/infer", b"{}", {"Inference-Header-Content-Length": "x"}), 400, "byte count"),
        (post(url, "/v2/repository/models/ghost/load", b""), 404, "unknown artifact 'ghost'"),
    ]
    for (status, body), want_status, fragment in cases:
        assert status == want_status, (status, body)
        assert fragment in body["error"], body
    status, body = infer_json(url, "a", "X", good)
    assert status == 200 and body["outputs"][0]["data"] == [2.0, 3.0, 4.0, 5.0]
    assert get(url, "/v2/models/nope")[0] == 404


def test_the_models_refusal_is_a_400_and_an_engine_failure_a_500():
    settings = server_settings()
    server = RunningServer([], settings, DataPlane(settings, lambda attach: FixedRepository([ErrorModel()], attach)))
    try:
        status, body = infer_json(server.url, "error", "X", np.array([[-1, 0, 0, 0]], np.float32))
        assert status == 400 and "out of this model's domain" in body["error"]
        client = triton.InferenceServerClient(server.url)
        with pytest.raises(triton.InferenceServerException, match="the engine lost its device") as failed:
            triton_infer(client, "error", {"X": np.array([[np.nan, 0, 0, 0]], np.float32)}, ["O"])
        assert failed.value.status() == "500"
        assert infer_json(server.url, "error", "X", np.array([[1, 0, 0, 0]], np.float32))[0] == 200
    finally:
        server.stop()


def test_overload_answers_503_and_recovers(serve):
    server = serve({"slow": [slow_model(steps=30)]}, {"slow": named("slow")}, max_pending=2, workers=1)
    x = np.ones((64, 512), np.float32)
    statuses = []

    def send():
        statuses.append(infer_json(server.url, "slow", "X", x)[0])

    threads = [threading.Thread(target=send) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert set(statuses) <= {200, 503}
    assert statuses.count(503) >= 1 and statuses.count(200) >= 2
    assert infer_json(server.url, "slow", "X", x)[0] == 200


def test_load_and_unload_while_traffic_runs(serve):
    server = serve({"steady": [scale_model(2.0)], "churn": [scale_model(5.0)]},
                   {"steady": named("steady"), "churn": named("churn")})
    stop = threading.Event()
    steady_status = []

    def traffic():
        x = np.ones((1, 4), np.float32)
        while not stop.is_set():
            status, body = infer_json(server.url, "steady", "X", x)
            steady_status.append(status)
            assert body["outputs"][0]["data"] == [2.0, 3.0, 4.0, 5.0]

    threads = [threading.Thread(target=traffic) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        for _ in range(5):
            assert post(server.url, "/v2/repository/models/churn/unload", b"")[0] == 200
            assert infer_json(server.url, "churn", "X", np.ones((1, 4), np.float32))[0] == 404
            assert get(server.url, "/v2/health/ready")[0] == 200  # an unload on purpose is no failure
            assert post(server.url, "/v2/repository/models/churn/load", b"")[0] == 200
            status, body = infer_json(server.url, "churn", "X", np.ones((1, 4), np.float32))
            assert status == 200 and body["outputs"][0]["data"] == [5.0, 6.0, 7.0, 8.0]
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert steady_status and set(steady_status) == {200}
    index = post(server.url, "/v2/repository/index", b"")[1]
    assert {"name": "churn", "state": "READY"}.items() <= next(e for e in index if e["name"] == "churn").items()


def test_dynamic_batching_stacks_requests(serve):
    server = serve({"b": [batch_model()]}, {"b": named("double")}, default_batching=_batching(8, 50_000))
    results = {}

    def send(k):
        x = np.full((1, 4), k, np.float32)
        results[k] = infer_json(server.url, "double", "X", x)

    threads = [threading.Thread(target=send, args=(k,)) for k in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k, (status, body) in results.items():
        assert status == 200 and body["outputs"][0]["data"] == [2.0 * k] * 4
    stats = triton.InferenceServerClient(server.url).get_inference_statistics("double")["model_stats"][0]
    assert stats["inference_count"] == 16
    assert stats["execution_count"] < 16  # requests were stacked into batches


def test_statistics_and_metrics(serve):
    server = serve({"m": [scale_model()]}, {"m": named("m")})
    for _ in range(3):
        assert infer_json(server.url, "m", "X", np.ones((1, 4), np.float32))[0] == 200
    assert infer_json(server.url, "m", "X", np.ones((2, 4), np.float32))[0] == 400
    stats = triton.InferenceServerClient(server.url).get_inference_statistics("m")["model_stats"][0]
    assert stats["inference_stats"]["success"]["count"] == 3 and stats["inference_stats"]["fail"]["count"] == 1
    status, text = get(server.url, "/metrics")
    text = text.decode()
    assert status == 200
    assert 'nv_inference_request_success{model="m",version="1"} 3' in text
    assert 'nv_inference_request_failure{model="m",reason="OTHER",version="1"} 1' in text
    assert 'nv_inference_exec_count{model="m",version="1"} 3' in text
    assert "_total" not in text
    for family in ("nv_inference_request_duration_us", "nv_inference_queue_duration_us",
                   "nv_inference_compute_input_duration_us", "nv_inference_compute_infer_duration_us",
                   "nv_inference_compute_output_duration_us"):
        assert f"# TYPE {family} counter" in text and f'{family}{{model="m",version="1"}} ' in text
    assert {"compute_input", "compute_output"} <= set(stats["inference_stats"])


def test_sigterm_finishes_in_flight_requests_then_exits(make_artifact, tmp_path):
    artifact = make_artifact([slow_model(steps=60)], named("slow"), name="slow.popef")
    port = free_port()
    exe = os.path.join(os.path.dirname(sys.executable), "popfuse")
    proc = subprocess.Popen([exe, "serve", str(artifact), "--port", str(port), "--grpc-port", str(free_port()),
                             "--workers", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    url = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if get(url, "/v2/health/ready")[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline and proc.poll() is None, proc.stderr.read()
            time.sleep(0.1)
        statuses = []
        x = np.ones((64, 512), np.float32)
        threads = [threading.Thread(target=lambda: statuses.append(infer_json(url, "slow", "X", x)[0]))
                   for _ in range(4)]
        for t in threads:
            t.start()
        time.sleep(0.3)  # the requests are in flight
        proc.send_signal(signal.SIGTERM)
        for t in threads:
            t.join(timeout=60)
        assert statuses == [200] * 4
        assert proc.wait(timeout=60) == 0
        with pytest.raises(OSError):
            get(url, "/v2/health/live")
    finally:
        if proc.poll() is None:
            proc.kill()


def _batching(size, delay_us):
    from popfuse.runtime.server.settings import BatchingConfig

    return BatchingConfig(size, delay_us)


def test_a_failed_load_is_reported_and_makes_the_server_not_ready(serve):
    server = serve({"fragile": [scale_model(2.0)], "other": [scale_model(3.0)]},
                   {"fragile": named("fragile"), "other": named("other")})
    path = next(p for p in server.artifacts if p.stem == "fragile")
    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 2])  # truncated on disk
    status, body = post(server.url, "/v2/repository/models/fragile/load", b"")
    assert status == 503 and "failed to load" in body["error"] and "truncated" in body["error"]
    assert get(server.url, "/v2/health/ready")[0] == 503
    assert infer_json(server.url, "other", "X", np.ones((1, 4), np.float32))[0] == 200  # others keep serving
    path.write_bytes(good)
    assert post(server.url, "/v2/repository/models/fragile/load", b"")[0] == 200
    assert get(server.url, "/v2/health/ready")[0] == 200


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """One server for the module's read-only tests: model a (scale 2) and b (batched double)."""
    from popfuse.fusion import compile_artifact, fuse_models
    from popfuse.runtime.artifact import write_artifact
    from popfuse.runtime.server.access import Restriction

    path = tmp_path_factory.mktemp("http") / "pair.popef"
    write_artifact(path, compile_artifact(fuse_models([scale_model(2.0), batch_model()], named("a", "b")),
                                          "onnxruntime-cpu"))
    settings = server_settings(batching={"b": _batching(4, 1000)},
                               http_restricted=(Restriction.parse("model-repository:admin-key=s3cret"),))
    server = RunningServer([path], settings)
    yield server
    server.stop()


def request(url: str, method: str, path: str, body: bytes = b"", headers: dict | None = None) -> tuple[int, dict]:
    host, port = url.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    conn.request(method, path, body=body, headers=headers or {})
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response.status, json.loads(data) if data else {}


def test_the_requests_that_got_a_500_get_a_4xx_with_a_json_error(shared):
    deep = "[" * 50_000 + "]" * 50_000
    x = '{"name": "X", "datatype": "FP32", "shape": [1, 4], "data": %s}'
    cases = [
        (x % "[1e400, 0, 0, 0]", {}),  # a number too large for a float
        (x % "[%d, 0, 0, 0]" % 10**400, {}),  # an integer too large for one
        ('{"inputs": %s}' % deep, {}),
        (x % deep, {}),
        ('{"inputs": [%s], "parameters": %s}' % (x % "[1, 2, 3, 4]", '{"a": ' * 50_000 + "1" + "}" * 50_000), {}),
        (x % "[1, 2, 3, 4]", {"Inference-Header-Content-Length": "²"}),
        (x % "[1, 2, 3, 4]", {"Inference-Header-Content-Length": "9" * 5000}),
    ]
    for body, headers in cases:
        status, answer = request(shared.url, "POST", "/v2/models/a/infer", ('{"inputs": [%s]}' % body
                                 if not body.startswith('{"inputs"') else body).encode(), headers)
        assert status == 400 and answer["error"], (status, answer, body[:60], headers)
    assert infer_json(shared.url, "a", "X", np.ones((1, 4), np.float32))[0] == 200


def test_model_config_versions_and_unknown_routes(shared):
    client = triton.InferenceServerClient(shared.url)
    config = client.get_model_config("b")
    assert config["max_batch_size"] == 4 and config["dynamic_batching"] == {"max_queue_delay_microseconds": 1000}
    assert config["input"][0]["data_type"] == "TYPE_FP32" and config["input"][0]["dims"] == [4]
    assert client.get_model_config("a")["max_batch_size"] == 0
    assert client.get_model_config("a")["input"][0]["dims"] == [1, 4]
    for path in ("/v2/models/a/versions/7", "/v2/models/a/versions/-1", "/v2/models/a/versions/7/config",
                 "/v2/models/a/versions/0/ready"):
        status, body = request(shared.url, "GET", path)
        assert status == 404 and "has no version" in body["error"], (path, status, body)
    assert request(shared.url, "GET", "/v2/models/a/versions/1")[0] == 200
    status, body = request(shared.url, "GET", "/v2/nowhere")
    assert status == 404 and body == {"error": "no such endpoint: GET /v2/nowhere"}
    status, body = request(shared.url, "DELETE", "/v2/models/a/infer")
    assert status == 405 and "does not take DELETE" in body["error"]
    status, body = request(shared.url, "POST", "/v2/systemsharedmemory/status")
    assert status == 400 and "not supported" in body["error"]
    assert client.get_inference_statistics()["model_stats"]  # /v2/models/stats is every model's, not a model's


def test_a_restricted_repository_refuses_an_unload_without_the_key(shared):
    for headers in ({}, {"admin-key": "wrong"}):
        status, body = request(shared.url, "POST", "/v2/repository/models/pair/unload", headers=headers)
        assert status == 403 and "model-repository API is restricted" in body["error"]
    assert request(shared.url, "GET", "/v2/models/a/ready")[0] == 200  # nothing changed
    assert request(shared.url, "POST", "/v2/repository/index", headers={"Admin-Key": "s3cret"})[0] == 200
    assert request(shared.url, "GET", "/v2/models/a")[0] == 200  # other groups stay open


def test_nan_and_infinity_travel_as_triton_sends_them(shared):
    body = '{"inputs": [{"name": "X", "datatype": "FP32", "shape": [1, 4], "data": [NaN, Infinity, -Infinity, 1]}]}'
    host, port = shared.url.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    conn.request("POST", "/v2/models/a/infer", body=body)
    text = conn.getresponse().read().decode()
    conn.close()
    assert '"data":[NaN,Infinity,-Infinity,5.0]' in text  # bare, as Triton writes them
    client = triton.InferenceServerClient(shared.url)
    out = triton_infer(client, "a", {"X": np.array([[np.nan, np.inf, -np.inf, 1]], np.float32)}, ["O"], binary=False)
    np.testing.assert_array_equal(out["O"], [[np.nan, np.inf, -np.inf, 5.0]])


def test_a_client_that_disconnects_mid_body_is_one_log_line(shared, caplog):
    import logging
    import socket

    with caplog.at_level(logging.INFO):
        sock = socket.create_connection(tuple(shared.url.split(":")[:1]) + (int(shared.url.split(":")[1]),))
        sock.sendall(b"POST /v2/models/a/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{\"inputs\"")
        time.sleep(0.3)
        sock.close()
        deadline = time.monotonic() + 10
        while "disconnected" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.05)
    lines = [r for r in caplog.records if r.name.startswith("popfuse")]
    assert len(lines) == 1 and "disconnected before sending the whole request" in lines[0].getMessage()
    assert not any(r.exc_info for r in caplog.records)


def test_a_refusal_names_the_clients_tensor_never_an_internal_node(serve, ppocr_build):
    server = serve({"ppocr": ppocr_build.popef_path})
    client = triton.InferenceServerClient(server.url)
    with pytest.raises(triton.InferenceServerException) as failed:
        triton_infer(client, "det", {"x": np.zeros((1, 3, 2, 700), np.float32)}, ["sigmoid_0.tmp_0"])
    message = str(failed.value)
    assert failed.value.status() == "400" and "cannot run on these inputs" in message
    assert "dispatch/" not in message and "graph0/" not in message and "Name:'" not in message


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=20,
)
_inputs = st.fixed_dictionaries(
    {"name": st.sampled_from(["X", "x", "", 5]), "datatype": st.sampled_from(["FP32", "INT64", "BOOL", "BYTES", 3]),
     "shape": st.one_of(st.lists(st.integers(-1, 5), max_size=3), _json_values)},
    optional={"data": _json_values, "parameters": st.one_of(
        st.fixed_dictionaries({"binary_data_size": st.one_of(st.integers(-4, 64), _json_values)}), _json_values)},
)
_documents = st.one_of(
    _json_values,
    st.fixed_dictionaries({"inputs": st.lists(_inputs, max_size=3)},
                          optional={"outputs": _json_values, "parameters": _json_values, "id": _json_values}),
)
_headers = st.one_of(st.none(), st.sampled_from(["²", "9" * 5000, "-1", "0", "12", " 3", "1e3"]),
                    st.text(st.characters(blacklist_characters="\r\n"), max_size=5))


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(document=_documents, tail=st.binary(max_size=32), header=_headers)
def test_fuzz_http_requests_get_an_answer_or_a_4xx_never_a_5xx(shared, document, tail, header):
    body = json.dumps(document).encode() + tail
    headers = {} if header is None else {"Inference-Header-Content-Length": header.encode("utf-8").decode("latin-1")}
    status, answer = request(shared.url, "POST", "/v2/models/a/infer", body, headers)
    assert status == 200 or (400 <= status < 500 and answer.get("error")), (status, answer)


def test_malformed_requests_leak_no_descriptor_and_others_keep_serving(shared):
    before = len(os.listdir("/proc/self/fd"))
    for k in range(300):
        body = [b"{", b'{"inputs": 5}', b"[" * 3000, b'{"inputs": [{"name": "X"}]}'][k % 4]
        assert request(shared.url, "POST", "/v2/models/a/infer", body)[0] == 400
    assert len(os.listdir("/proc/self/fd")) <= before + 2
    assert infer_json(shared.url, "a", "X", np.ones((1, 4), np.float32))[0] == 200
