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
