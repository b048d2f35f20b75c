"""Artifacts for the scale-out tests, built once per session (three of three small MLPs each, all the same
size), a catalog over them, storage on loopback HTTP, and the session's one Ray cluster."""

from __future__ import annotations

import functools
import http.server
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import yaml

from popfuse.benchmarks.models import Workload, mlp
from popfuse.benchmarks.server_process import free_port
from popfuse.benchmarks.setups import build_fused

ARTIFACTS = ("a0", "a1", "a2")
#: The session cluster's repository API needs this header (HTTP) or metadata key (gRPC).
RESTRICTED = "model-repository:admin-key=s3cret"

# A local Ray cluster uses Ray's token authentication by default; a driver given its address joins with the
# token (in ~/.ray) only when told so before Ray is imported.
os.environ.setdefault("RAY_AUTH_MODE", "token")


@dataclass
class Shelf:
    """Built artifacts by name, their models' sources, and each artifact's size in bytes."""

    folder: Path
    paths: dict[str, Path]
    models: dict[str, list[Workload]]
    sizes: dict[str, int] = field(default_factory=dict)

    def reference(self, model: str, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """onnxruntime's output for ``model`` on its source file."""
        source = next(w.path for ws in self.models.values() for w in ws if w.name == model)
        return ort.InferenceSession(str(source), providers=["CPUExecutionProvider"]).run(None, feeds)[0]

    def catalog(self, path: Path, artifacts: dict[str, str] | None = None, **sections) -> Path:
        """Write a catalog at ``path``: these artifacts (or ``artifacts``), a budget of two artifacts per
        replica, and the sections given (replacing the defaults)."""
        doc = {
            "artifacts": artifacts or {name: str(p) for name, p in self.paths.items()},
            "replicas": {"memory_budget": 2 * max(self.sizes.values()) + min(self.sizes.values()) // 2},
            **sections,
        }
        path.write_text(yaml.safe_dump(doc))
        return path


@pytest.fixture(scope="session")
def shelf(tmp_path_factory) -> Shelf:
    folder = tmp_path_factory.mktemp("scaleout")
    models = {a: [mlp(folder, f"{a}m{k}", seed=10 * i + k, width=32, layers=2) for k in range(3)]
              for i, a in enumerate(ARTIFACTS)}
    paths = {a: build_fused(ws, folder / a).popef_path.rename(folder / f"{a}.popef") for a, ws in models.items()}
    return Shelf(folder, paths, models, {a: p.stat().st_size for a, p in paths.items()})


@pytest.fixture(scope="session")
def storage(shelf) -> str:
    """The shelf's folder served over HTTP on loopback, as object storage would serve it: its base URL."""
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(shelf.folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def pytest_collection_modifyitems(items):
    # The Ray cluster is shared by the session; the test that stops it runs after every test that uses it.
    items.sort(key=lambda item: item.name == "test_shutdown_leaves_no_ray_process")


class RayServer:
    """``popfuse serve --ray CATALOG`` run as a user runs it, starting its own local Ray cluster; this process
    joins the cluster as a driver (to kill replicas and read metrics)."""

    def __init__(self, catalog: Path, log: Path):
        self.catalog, self.log = catalog, log
        self.port, self.grpc_port = free_port(), free_port()
        popfuse = Path(sys.executable).with_name("popfuse")
        # Metrics reach Prometheus every half second rather than every ten, so tests need not wait.
        env = {**os.environ, "RAY_metrics_report_interval_ms": "500"}
        env.pop("RAY_ADDRESS", None)
        self.process = subprocess.Popen([str(popfuse), "serve", "--ray", str(catalog), "--port", str(self.port),
                                         "--grpc-port", str(self.grpc_port)],
                                        stdout=subprocess.DEVNULL, stderr=log.open("w"), env=env)
        self.url, self.grpc_url = f"127.0.0.1:{self.port}", f"127.0.0.1:{self.grpc_port}"
        deadline = time.monotonic() + 240
        # Ready once it says where its cluster is (after the application is up).
        pattern = r"on the Ray cluster at (\S+?)(?: \(dashboard: (\S+)\))?;"
        while (found := re.search(pattern, log.read_text())) is None:
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.process.terminate()
                self.process.wait(60)
                raise RuntimeError(f"popfuse serve --ray did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        assert self._ready()
        self.address, self.dashboard = found.group(1), found.group(2)
        import ray

        ray.init(address=self.address, logging_level="WARNING", log_to_driver=False)
        node = ray.nodes()[0]
        self.metrics_url = f"http://{node['NodeManagerAddress']}:{node['MetricsExportPort']}/metrics"

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.url}/v2/health/ready", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def metrics(self, name: str) -> dict[tuple[str, str], float]:
        """Samples of Ray metric ``name`` (``ray_`` prefixed, as exported) by (replica, artifact), summed over
        the rest of the labels; artifact is "" for metrics without it."""
        from prometheus_client.parser import text_string_to_metric_families  # installed with the ray extra

        with urllib.request.urlopen(self.metrics_url, timeout=10) as response:
            text = response.read().decode()
        out: dict[tuple[str, str], float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and sample.labels.get("application") == "popfuse":
                    key = (sample.labels["replica"], sample.labels.get("artifact", ""))
                    out[key] = out.get(key, 0.0) + sample.value
        return out

    def descendants(self) -> set[int]:
        """Every process started under the command: Ray's own and its workers."""
        children: dict[int, list[int]] = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
        found, todo = set(), [self.process.pid]
        while todo:
            pid = todo.pop()
            for child in children.get(pid, []):
                if child not in found:
                    found.add(child)
                    todo.append(child)
        return found

    def stop(self) -> int:
        """SIGTERM, as a supervisor stops it; its exit status."""
        import ray

        ray.shutdown()
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise


@pytest.fixture(scope="session")
def ray_server(shelf, storage, tmp_path_factory) -> RayServer:
    """One cluster for the session: 2 replicas with a budget of two artifacts each, 3 artifacts (one read
    from a URI) and a fourth, ``b0``, that tests may break; each replica runs two requests at most; the
    repository API restricted (``RESTRICTED``) over HTTP and gRPC."""
    folder = tmp_path_factory.mktemp("ray")
    spare = mlp(folder, "b0m0", seed=99, width=32, layers=2)
    artifacts = {"a0": str(shelf.paths["a0"]), "a1": str(shelf.paths["a1"]), "a2": f"{storage}/a2.popef",
                 "b0": str(build_fused([spare], folder / "b0").popef_path)}
    catalog = shelf.catalog(folder / "catalog.yaml", artifacts=artifacts, ingress={
        "ray_actor_options": {"num_cpus": 0.25}, "max_ongoing_requests": 64,
        "http_restricted_api": [RESTRICTED], "grpc_restricted_api": [RESTRICTED]})
    doc = yaml.safe_load(catalog.read_text())
    doc["replicas"].update(num_replicas=2, max_ongoing_requests=2, workers=1, threads=1,
                           ray_actor_options={"num_cpus": 0.5})
    catalog.write_text(yaml.safe_dump(doc))
    server = RayServer(catalog, folder / "serve.log")
    yield server
    if server.process.poll() is None:
        server.stop()
