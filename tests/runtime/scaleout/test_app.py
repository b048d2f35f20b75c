"""The application as users run it: ``popfuse serve --ray`` (the session's cluster), Ray's own ``serve run``
through the application builder, settings passed through to Ray, and a shutdown that leaves no Ray process."""

from __future__ import annotations

import importlib
import json
import os
import queue
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import yaml

if os.environ.get("POPFUSE_REQUIRE_RAY"):  # CI installs the extra: a skip there would hide a failure
    ray = importlib.import_module("ray")
else:
    ray = pytest.importorskip("ray", reason="needs the ray extra: pip install 'popfuse[ray]'")

pytestmark = pytest.mark.ray


def post(url: str, doc: dict) -> dict:
    request = urllib.request.Request(url, json.dumps(doc).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def deployments(ray_server) -> dict:
    """Each application's deployments as Ray Serve reports them (its REST API on the dashboard, which asks
    for the cluster's token)."""
    token = (Path.home() / ".ray" / "auth_token").read_text().strip()
    request = urllib.request.Request(f"{ray_server.dashboard}/api/serve/applications/",
                                     headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        details = json.loads(response.read())
    return {app: detail["deployments"] for app, detail in details["applications"].items()}


def test_the_catalog_settings_reach_ray(ray_server):
    artifacts = deployments(ray_server)["popfuse"]["Artifacts"]["deployment_config"]
    assert artifacts["num_replicas"] == 2 and artifacts["max_ongoing_requests"] == 2
    assert artifacts["ray_actor_options"]["num_cpus"] == 0.5
    ingress = deployments(ray_server)["popfuse"]["Ingress"]["deployment_config"]
    assert ingress["max_ongoing_requests"] == 64 and ingress["ray_actor_options"]["num_cpus"] == 0.25


def answers_as_onnxruntime(base: str, model: str, x: np.ndarray, shelf) -> None:
    """``model`` under ``base`` answers ``x`` as onnxruntime does on its source, once the application that
    serves it is up (within two minutes of its deployment)."""
    tensor = {"name": "X", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}
    deadline = time.monotonic() + 120
    while True:
        try:
            answer = post(f"{base}/v2/models/{model}/infer", {"inputs": [tensor]})
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)
    np.testing.assert_allclose(np.array(answer["outputs"][0]["data"]).reshape(x.shape),
                               shelf.reference(model, {"X": x}), rtol=1e-5, atol=1e-6)


def stream(ray_server, model: str, x: np.ndarray, headers: dict) -> tuple:
    """One request on a gRPC stream (tritonclient's): its (result, error)."""
    import tritonclient.grpc as triton_grpc

    client = triton_grpc.InferenceServerClient(ray_server.grpc_url)
    answers: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)), headers=headers)
    tensor = triton_grpc.InferInput("X", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    client.async_stream_infer(model, [tensor])
    answer = answers.get(timeout=60)
    client.stop_stream()
    return answer


def test_serve_run_deploys_the_application_builder(ray_server, shelf, tmp_path):
    # A second application on the cluster, its inference API restricted over gRPC; Ray's gRPC proxy (which
    # popfuse serve --ray started) routes to it by the 'application' metadata key.
    catalog = shelf.catalog(tmp_path / "second.yaml", artifacts={"a0": str(shelf.paths["a0"])}, ingress={
        "ray_actor_options": {"num_cpus": 0.1}, "grpc_restricted_api": ["inference:tenant-key=abc"]})
    doc = yaml.safe_load(catalog.read_text())
    doc["replicas"].update(max_ongoing_requests=3, ray_actor_options={"num_cpus": 0.2},
                           autoscaling_config={"min_replicas": 1, "max_replicas": 2})
    catalog.write_text(yaml.safe_dump(doc))
    serve_cli = Path(sys.executable).with_name("serve")
    ran = subprocess.run([str(serve_cli), "run", "--non-blocking", "--address", ray_server.address, "--name", "second",
                          "--route-prefix", "/second", "popfuse.runtime.scaleout.app:build", f"catalog={catalog}"],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr[-3000:]
    try:
        x = np.ones((1, 32), np.float32)
        answers_as_onnxruntime(f"http://{ray_server.url}/second", "a0m0", x, shelf)
        result, error = stream(ray_server, "a0m0", x, {"application": "second"})
        assert result is None and error.status() == "StatusCode.PERMISSION_DENIED"
        assert "send the 'tenant-key' header" in error.message()
        result, error = stream(ray_server, "a0m0", x, {"application": "second", "tenant-key": "abc"})
        assert error is None
        np.testing.assert_allclose(result.as_numpy("a1"), shelf.reference("a0m0", {"X": x}), rtol=1e-5, atol=1e-6)
        config = deployments(ray_server)["second"]["Artifacts"]["deployment_config"]
        assert config["max_ongoing_requests"] == 3 and config["ray_actor_options"]["num_cpus"] == 0.2
        assert (config["autoscaling_config"]["min_replicas"], config["autoscaling_config"]["max_replicas"]) == (1, 2)
    finally:
        from ray import serve

        serve.delete("second")


def test_serve_deploy_deploys_the_documented_config(ray_server, shelf, tmp_path):
    # The Ray Serve config file docs/scale-out.md shows, as written but for this cluster's ports, another
    # application name and route, and a catalog of one artifact; deployed by Ray's own `serve deploy` through
    # the dashboard, next to the application popfuse serve --ray runs, which it leaves alone.
    text = (Path(__file__).parents[3] / "docs" / "scale-out.md").read_text()
    config = yaml.safe_load(re.search(r"```yaml\n(# serve-config\.yaml\n.*?)```", text, re.S).group(1))
    catalog = shelf.catalog(tmp_path / "deployed.yaml", artifacts={"a1": str(shelf.paths["a1"])},
                            ingress={"ray_actor_options": {"num_cpus": 0.1}})
    doc = yaml.safe_load(catalog.read_text())
    doc["replicas"].update(num_replicas=1, ray_actor_options={"num_cpus": 0.1})
    catalog.write_text(yaml.safe_dump(doc))
    config["http_options"] = {"host": "127.0.0.1", "port": ray_server.port}
    config["grpc_options"]["port"] = ray_server.grpc_port
    (application,) = config["applications"]
    assert application["import_path"] == "popfuse.runtime.scaleout.app:build"
    application.update(name="deployed", route_prefix="/deployed", args={"catalog": str(catalog)})
    path = tmp_path / "serve-config.yaml"
    path.write_text(yaml.safe_dump(config))
    serve_cli = Path(sys.executable).with_name("serve")
    ran = subprocess.run([str(serve_cli), "deploy", str(path), "--address", ray_server.dashboard],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr[-3000:]
    try:
        answers_as_onnxruntime(f"http://{ray_server.url}/deployed", "a1m2", np.full((1, 32), 0.5, np.float32), shelf)
        assert {"popfuse", "deployed"} <= set(deployments(ray_server))
    finally:
        from ray import serve

        serve.delete("deployed")


def test_a_bad_builder_argument_is_refused(ray_server, tmp_path):
    from popfuse.runtime.scaleout.app import build
    from popfuse.runtime.scaleout.catalog import CatalogError

    with pytest.raises(CatalogError, match=r"takes one argument, catalog=PATH.yaml; received catalogue=x.yaml"):
        build({"catalogue": "x.yaml"})
    with pytest.raises(CatalogError, match="absent.yaml: no such catalog file"):
        build({"catalog": str(tmp_path / "absent.yaml")})


def test_ray_refusing_a_setting_names_the_section(shelf, tmp_path):
    from popfuse.runtime.scaleout.app import build
    from popfuse.runtime.scaleout.catalog import CatalogError

    catalog = shelf.catalog(tmp_path / "c.yaml")
    doc = yaml.safe_load(catalog.read_text())
    doc["replicas"]["autoscaling_config"] = {"min_replicas": 4, "max_replicas": 2}
    catalog.write_text(yaml.safe_dump(doc))
    with pytest.raises(CatalogError, match=r"c.yaml: replicas: Ray Serve refuses the settings: .*max_replicas"):
        build({"catalog": str(catalog)})


def test_a_bad_catalog_is_refused_before_anything_starts(shelf, tmp_path):
    catalog = shelf.catalog(tmp_path / "c.yaml")
    doc = yaml.safe_load(catalog.read_text())
    doc["replicas"]["memory_budget"] = 100
    catalog.write_text(yaml.safe_dump(doc))
    popfuse = Path(sys.executable).with_name("popfuse")
    start = time.monotonic()
    ran = subprocess.run([str(popfuse), "serve", "--ray", str(catalog)], capture_output=True, text=True, timeout=120)
    assert ran.returncode == 1
    assert ran.stderr.startswith("popfuse serve: error: ") and ran.stderr.count("\n") == 1
    assert "replicas.memory_budget is 100 B, smaller than artifact 'a0'" in ran.stderr
    assert time.monotonic() - start < 20  # no cluster was started


def test_shutdown_leaves_no_ray_process(ray_server):
    # Run last (conftest): SIGTERM stops the command, which deletes its application and the cluster it started.
    processes = ray_server.descendants()
    assert len(processes) >= 5  # the GCS, the raylet, the Serve controller and proxy, the replicas …
    assert ray_server.stop() == 0
    deadline = time.monotonic() + 30
    while (alive := [pid for pid in processes if Path(f"/proc/{pid}").exists()]) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not alive, [Path(f"/proc/{pid}/cmdline").read_bytes()[:100] for pid in alive]
