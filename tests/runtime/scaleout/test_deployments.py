"""The deployments on a real local Ray cluster (``popfuse serve --ray``): every model through tritonclient over
HTTP and gRPC, sticky routing, evictions and reloads under traffic, a failed load, per-replica metrics, a killed
replica."""

from __future__ import annotations

import importlib
import inspect
import os
import queue
import threading
import time
from collections import Counter

import grpc
import numpy as np
import pytest

if os.environ.get("POPFUSE_REQUIRE_RAY"):  # CI installs the extra: a skip there would hide a failure
    ray = importlib.import_module("ray")
else:
    ray = pytest.importorskip("ray", reason="needs the ray extra: pip install 'popfuse[ray]'")

import tritonclient.grpc as triton_grpc  # noqa: E402
import tritonclient.http as triton  # noqa: E402
from tritonclient.grpc import service_pb2  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

from popfuse.runtime import Runner, RuntimeConfig  # noqa: E402

pytestmark = pytest.mark.ray

MODELS = [f"a{a}m{k}" for a in range(3) for k in range(3)]
LOADS = "ray_popfuse_artifact_loads_total"
EVICTIONS = "ray_popfuse_artifact_evictions_total"
FAILURES = "ray_popfuse_artifact_load_failures_total"


def infer(client: triton.InferenceServerClient, shelf, model: str) -> None:
    """One request for ``model``, its answer checked against onnxruntime on the source model."""
    feeds = next(w.feeds for ws in shelf.models.values() for w in ws if w.name == model)
    x = triton.InferInput("X", list(feeds["X"].shape), "FP32")
    x.set_data_from_numpy(feeds["X"], binary_data=True)
    result = client.infer(model, [x])
    (output,) = result.get_response()["outputs"]
    np.testing.assert_allclose(result.as_numpy(output["name"]), shelf.reference(model, feeds), rtol=1e-5, atol=1e-6)


def total(counts: dict) -> float:
    return sum(counts.values())


def eventually(condition, timeout: float = 30.0):
    """Poll ``condition`` until it returns something true (Ray exports metrics every half second)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.25)


def settle(ray_server, shelf) -> None:
    """Requests for every model, one at a time, until a whole pass loads nothing: every artifact is held by a
    replica, and the routing table knows it."""
    client = triton.InferenceServerClient(ray_server.url)
    for _ in range(6):
        before = total(ray_server.metrics(LOADS))
        for model in MODELS:
            infer(client, shelf, model)
        time.sleep(1.5)
        if total(ray_server.metrics(LOADS)) == before:
            return
    raise AssertionError("sequential requests still load artifacts after six passes")


def traffic(ray_server, shelf, clients: int, each: int, retries: int = 0, during=None,
            order: list[str] | None = None) -> tuple[int, Counter]:
    """``clients`` threads, each sending ``each`` requests (checked): for models of every artifact at random, or
    for the models of ``order`` in turn. A 503 is retried up to ``retries`` times. Calls ``during()`` once the
    traffic runs. Returns the requests answered and the failures by message."""
    answered, failures, lock = [0], Counter(), threading.Lock()
    started = threading.Barrier(clients + 1)

    def client(k: int) -> None:
        connection = triton.InferenceServerClient(ray_server.url, network_timeout=120)
        rng = np.random.default_rng(k)
        started.wait()
        for i in range(each):
            model = order[i % len(order)] if order else MODELS[int(rng.integers(len(MODELS)))]
            for attempt in range(retries + 1):
                try:
                    infer(connection, shelf, model)
                except InferenceServerException as e:
                    with lock:
                        failures[f"{e.status()} {e.message()}"[:160]] += 1
                    if attempt < retries and e.status() == "503":
                        time.sleep(0.2)
                        continue
                else:
                    with lock:
                        answered[0] += 1
                break
        connection.close()

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    started.wait()
    if during is not None:
        during()
    for t in threads:
        t.join()
    return answered[0], failures


def test_every_model_of_every_artifact_answers_as_onnxruntime(ray_server, shelf):
    client = triton.InferenceServerClient(ray_server.url)
    assert client.is_server_ready()
    for model in MODELS:
        infer(client, shelf, model)
        metadata = client.get_model_metadata(model)
        assert metadata["platform"] == "popfuse_onnxruntime" and metadata["inputs"][0]["shape"] == [1, 32]
    stats = client.get_inference_statistics("a1m2")["model_stats"][0]
    assert stats["inference_count"] >= 1 and stats["inference_stats"]["compute_infer"]["ns"] > 0


def test_the_ingress_has_a_method_for_every_grpc_rpc():
    # Ray Serve's gRPC proxy calls the ingress method named after the RPC; one missing would answer UNIMPLEMENTED
    # with Ray's message, not the servicer's.
    from popfuse.runtime.scaleout.deployments import Ingress

    ingress = Ingress.func_or_class
    for method in service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"].methods:
        call = getattr(ingress, method.name)
        assert call.__name__ == method.name
        assert "grpc_context" in inspect.signature(call).parameters  # Ray passes its context by that name
        assert inspect.isasyncgenfunction(call) == method.server_streaming


def grpc_input(model: str, shelf) -> tuple[triton_grpc.InferInput, np.ndarray]:
    x = next(w.feeds for ws in shelf.models.values() for w in ws if w.name == model)["X"]
    tensor = triton_grpc.InferInput("X", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    return tensor, x


def test_every_model_answers_over_grpc_as_the_runner(ray_server, shelf):
    # Triton's gRPC protocol through Ray Serve's gRPC proxy, served by popfuse's own servicer in the ingress.
    client = triton_grpc.InferenceServerClient(ray_server.grpc_url)
    assert client.is_server_live() and client.is_server_ready()
    assert client.get_server_metadata(as_json=True)["name"] == "popfuse"
    for artifact, path in shelf.paths.items():
        runner = Runner(path, RuntimeConfig(validate_io_params=False, intra_op_num_threads=1))  # as the replicas run it
        for sub in runner.subgraphs:
            tensor, x = grpc_input(sub.name, shelf)
            result = client.infer(sub.name, [tensor])
            expected = runner.execute({sub.inputs[0]: x})
            assert [o.name for o in result.get_response().outputs] == [sub.local_name(a) for a in sub.outputs]
            for anchor, array in expected.items():
                np.testing.assert_array_equal(result.as_numpy(sub.local_name(anchor)), array)
            assert client.is_model_ready(sub.name)
            metadata = client.get_model_metadata(sub.name, as_json=True)
            assert metadata["platform"] == "popfuse_onnxruntime" and metadata["inputs"][0]["shape"] == ["1", "32"]
            config = client.get_model_config(sub.name, as_json=True)["config"]
            assert config["parameters"]["artifact"]["string_value"] == artifact
    stats = client.get_inference_statistics("a1m2", as_json=True)["model_stats"][0]
    assert int(stats["inference_count"]) >= 1


def test_a_grpc_stream_through_ray_answers_each_request(ray_server, shelf):
    client = triton_grpc.InferenceServerClient(ray_server.grpc_url)
    answers: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    sent = {}
    for i, model in enumerate(MODELS):
        tensor, x = grpc_input(model, shelf)
        client.async_stream_infer(model, [tensor], request_id=str(i))
        sent[str(i)] = (model, x)
    tensor, _ = grpc_input("a0m0", shelf)
    client.async_stream_infer("absent", [tensor], request_id="bad")  # an error on the stream, which goes on
    received = [answers.get(timeout=120) for _ in range(len(MODELS) + 1)]
    client.stop_stream()
    errors = [error for _, error in received if error is not None]
    assert len(errors) == 1 and "unknown model 'absent'" in errors[0].message()
    results = {result.get_response().id: result for result, error in received if error is None}
    assert set(results) == set(sent)
    for request_id, (model, x) in sent.items():
        (output,) = results[request_id].get_response().outputs
        np.testing.assert_allclose(results[request_id].as_numpy(output.name), shelf.reference(model, {"X": x}),
                                   rtol=1e-5, atol=1e-6)


def test_grpc_errors_keep_their_status_through_ray(ray_server, shelf):
    client = triton_grpc.InferenceServerClient(ray_server.grpc_url)
    tensor, _ = grpc_input("a0m0", shelf)
    with pytest.raises(InferenceServerException) as failed:
        client.infer("absent", [tensor])
    assert failed.value.status() == "StatusCode.NOT_FOUND" and "unknown model 'absent'" in failed.value.message()
    wrong = triton_grpc.InferInput("X", [1, 31], "FP32")
    wrong.set_data_from_numpy(np.zeros((1, 31), np.float32))
    with pytest.raises(InferenceServerException) as failed:
        client.infer("a0m0", [wrong])
    assert failed.value.status() == "StatusCode.INVALID_ARGUMENT" and "input 'X'" in failed.value.message()
    with pytest.raises(InferenceServerException) as failed:
        client.get_system_shared_memory_status()
    assert failed.value.status() == "StatusCode.UNIMPLEMENTED"
    # Bytes that are no ModelInferRequest: Ray's proxy parses them with popfuse serve's parser, which hands the
    # servicer a refusal.
    with grpc.insecure_channel(ray_server.grpc_url) as channel:
        with pytest.raises(grpc.RpcError) as refused:
            channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")(b"\xff\xff\xff", timeout=60)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid protobuf message" in refused.value.details()
    assert client.is_server_live()
    # The catalog restricts the repository API (RESTRICTED in conftest), over gRPC as over HTTP.
    with pytest.raises(InferenceServerException) as failed:
        client.get_model_repository_index()
    assert failed.value.status() == "StatusCode.PERMISSION_DENIED" and "admin-key" in failed.value.message()
    index = client.get_model_repository_index(headers={"admin-key": "s3cret"}, as_json=True)["models"]
    assert {"a0", "a0m0", "a2m2"} <= {m["name"] for m in index}
    http = triton.InferenceServerClient(ray_server.url)
    with pytest.raises(InferenceServerException) as failed:
        http.get_model_repository_index()
    assert failed.value.status() == "403"
    assert {"a0", "a0m0"} <= {m["name"] for m in http.get_model_repository_index(headers={"admin-key": "s3cret"})}


def test_routing_is_sticky(ray_server, shelf):
    # Ray routes by the artifacts each replica reports (a Ray-internal call that popfuse makes itself): once
    # every artifact is held somewhere, requests one at a time load nothing more.
    settle(ray_server, shelf)
    client = triton.InferenceServerClient(ray_server.url)
    before = total(ray_server.metrics(LOADS))
    for _ in range(5):
        for model in MODELS:
            infer(client, shelf, model)
    time.sleep(1.5)
    assert total(ray_server.metrics(LOADS)) == before


def test_evictions_and_reloads_under_traffic_fail_no_request(ray_server, shelf):
    # Two requests at most per replica and six clients on one artifact at a time: its replica is busy, so
    # requests spill to the other, which loads it too. Artifact after artifact, each replica comes to hold two
    # and is asked for a third (an eviction), then for the one it evicted (a reload), while requests run.
    before_loads, before_evictions = ray_server.metrics(LOADS), total(ray_server.metrics(EVICTIONS))
    answered, failures = 0, Counter()
    for artifact in ("a0", "a1", "a2", "a0", "a1", "a2"):
        done, failed = traffic(ray_server, shelf, clients=8, each=18, order=[f"{artifact}m{k}" for k in range(3)])
        answered, failures = answered + done, failures + failed
    assert not failures and answered == 8 * 18 * 6
    evictions = eventually(lambda: total(ray_server.metrics(EVICTIONS)) - before_evictions)
    loads = ray_server.metrics(LOADS)
    # An artifact loaded again by a replica that had held it: loaded there during this traffic, twice in all.
    reloads = {key: n for key, n in loads.items() if n - before_loads.get(key, 0) >= 1 and n >= 2}
    assert evictions >= 1, f"no eviction; loads by (replica, artifact): {loads}"
    assert reloads, f"no reload; loads by (replica, artifact) before {before_loads}, after {loads}"
    # Per replica: what it holds stays within its budget, and every load's latency was recorded.
    budget = ray_server.metrics("ray_popfuse_memory_budget_bytes")
    resident = ray_server.metrics("ray_popfuse_resident_bytes")
    assert resident and all(0 < resident[key] <= budget[key] for key in resident)
    latencies = ray_server.metrics("ray_popfuse_artifact_load_seconds_count")
    assert total(latencies) == total(ray_server.metrics(LOADS))


def test_a_load_that_fails_leaves_the_replicas_serving_what_they_had(ray_server, shelf, tmp_path):
    settle(ray_server, shelf)
    client = triton.InferenceServerClient(ray_server.url)
    broken = ray_server.catalog.parent / "b0" / "executable.popef"
    data = bytearray(broken.read_bytes())
    data[-64] ^= 0xFF  # in the weights: the header still reads
    broken.write_bytes(bytes(data))
    loads, evictions = total(ray_server.metrics(LOADS)), total(ray_server.metrics(EVICTIONS))
    x = triton.InferInput("X", [1, 32], "FP32")
    x.set_data_from_numpy(np.zeros((1, 32), np.float32))
    with pytest.raises(InferenceServerException) as failed:
        client.infer("b0m0", [x])
    assert failed.value.status() == "503"
    assert "artifact 'b0' failed to load" in failed.value.message() and "corrupt" in failed.value.message()
    assert "Traceback" not in failed.value.message()
    for model in MODELS:
        infer(client, shelf, model)
    assert eventually(lambda: total(ray_server.metrics(FAILURES)) >= 1)
    assert (total(ray_server.metrics(LOADS)), total(ray_server.metrics(EVICTIONS))) == (loads, evictions)


def test_a_killed_replica_costs_only_the_requests_it_held(ray_server, shelf):
    from ray import serve

    replicas = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                if a["name"].startswith("SERVE_REPLICA::popfuse#Artifacts#")]
    assert len(replicas) == 2
    victim = replicas[0]

    def kill():
        time.sleep(1.0)
        ray.kill(ray.get_actor(victim, namespace="serve"), no_restart=True)

    answered, failures = traffic(ray_server, shelf, clients=6, each=40, retries=20, during=kill)
    assert answered == 240  # every client got every answer, retrying
    # Only what the killed replica held failed: two requests at most run there at once.
    assert sum(failures.values()) <= 2, failures
    assert all(message.startswith("503") for message in failures), failures

    def replacement() -> str | None:
        now = {a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
               if a["name"].startswith("SERVE_REPLICA::popfuse#Artifacts#")}
        status = serve.status().applications["popfuse"].deployments["Artifacts"]
        return next(iter(now - set(replicas)), None) if status.replica_states.get("RUNNING") == 2 else None

    newcomer = eventually(replacement, timeout=120)
    assert newcomer, "the killed replica was not replaced"
    new_id = newcomer.rsplit("#", 1)[1]
    answered, failures = traffic(ray_server, shelf, clients=6, each=30)
    assert answered == 180 and not failures
    assert eventually(lambda: any(replica == new_id for replica, _ in ray_server.metrics(LOADS)))
