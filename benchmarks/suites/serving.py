"""Serving: throughput and p99 at concurrency 1, 8 and 32 on mixed PP-OCR traffic.

The fused server (``popfuse serve`` on the det/rec/cls artifact) against the
baseline (one onnxruntime session per model behind the same HTTP stack), each
in its own process, loaded by client threads that keep their connections
open and send binary tensors. Targets: fused throughput at least 0.95x the
baseline; dynamic batching on, against off, at least 2x the throughput of
batch-1 classifier requests.
"""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence

import numpy as np

from ..context import Context
from ..models import ppocr
from ..setups import build_fused

CONCURRENCY = (1, 8, 32)


def run(ctx: Context) -> dict:
    folder = ctx.workdir / "serving"
    models = [ppocr(n) for n in ("det", "rec", "cls")]
    artifact = build_fused(models, folder).popef_path
    threads = str(ctx.threads)
    fused_cmd = [sys.executable, "-m", "fusion.cli", "serve", str(artifact), "--threads", threads]
    baseline_cmd = [sys.executable, "-m", "benchmarks.baseline_server", "--threads", threads,
                    *(f"{w.name}={w.path}" for w in models)]
    bodies = {w.name: _body(w.feeds["x"]) for w in models}
    seconds = 0.5 if ctx.smoke else 4.0
    levels = CONCURRENCY[:2] if ctx.smoke else CONCURRENCY
    rows = []
    for concurrency in levels:
        row = {"concurrency": concurrency}
        for label, command in (("fused", fused_cmd), ("baseline", baseline_cmd)):
            with _Server(command) as port:
                result = _load(port, bodies, concurrency, seconds)
            row.update({f"{label}_{k}": v for k, v in result.items()})
        row["throughput_ratio"] = row["fused_rps"] / row["baseline_rps"]
        rows.append(row)
    cls_body = {"cls": bodies["cls"]}
    batching = {}
    for label, extra in (("off", []), ("on", ["--max-batch-size", "32", "--max-queue-delay-us", "2000"])):
        with _Server(fused_cmd + extra) as port:
            batching[label] = _load(port, cls_body, 32 if not ctx.smoke else 8, seconds)
    return {"rows": rows, "batching": batching,
            "batching_ratio": batching["on"]["rps"] / batching["off"]["rps"]}


def _body(x: np.ndarray) -> tuple[bytes, dict]:
    header = json.dumps({
        "inputs": [{"name": "x", "datatype": "FP32", "shape": list(x.shape),
                    "parameters": {"binary_data_size": x.nbytes}}],
        "parameters": {"binary_data_output": True},
    }).encode()
    return header + x.tobytes(), {"Inference-Header-Content-Length": str(len(header)),
                                  "Content-Type": "application/octet-stream"}


class _Server:
    """A server process on a free loopback port, up and ready inside the ``with``."""

    def __init__(self, command: Sequence[str]):
        self.command = list(command)

    def __enter__(self) -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.proc = subprocess.Popen([*self.command, "--port", str(self.port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 120
        while True:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                conn.request("GET", "/v2/health/ready")
                if conn.getresponse().status == 200:
                    conn.close()
                    return self.port
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server did not start: {self.proc.stderr.read().decode()[-2000:]}")
            time.sleep(0.1)

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def _load(port: int, bodies: dict[str, tuple[bytes, dict]], concurrency: int, seconds: float) -> dict:
    """Closed-loop load: ``concurrency`` clients, each sending its next request when the last returns."""
    names = list(bodies)
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    failures = [0] * concurrency
    start_gate = threading.Barrier(concurrency + 1)
    stop_at = [0.0]

    def client(k: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        rng = np.random.default_rng(k)
        warm_body, warm_headers = bodies[names[0]]
        conn.request("POST", f"/v2/models/{names[0]}/infer", body=warm_body, headers=warm_headers)
        conn.getresponse().read()
        start_gate.wait()
        while time.perf_counter() < stop_at[0]:
            name = names[int(rng.integers(len(names)))]
            body, headers = bodies[name]
            t = time.perf_counter()
            conn.request("POST", f"/v2/models/{name}/infer", body=body, headers=headers)
            response = conn.getresponse()
            response.read()
            if response.status == 200:
                latencies[k].append(time.perf_counter() - t)
            else:
                failures[k] += 1
        conn.close()

    workers = [threading.Thread(target=client, args=(k,)) for k in range(concurrency)]
    for w in workers:
        w.start()
    stop_at[0] = time.perf_counter() + seconds
    start_gate.wait()
    began = time.perf_counter()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - began
    flat = np.array([x for per in latencies for x in per]) if any(latencies) else np.array([np.nan])
    return {
        "rps": len(flat) / elapsed,
        "p50_ms": float(np.percentile(flat, 50) * 1e3),
        "p99_ms": float(np.percentile(flat, 99) * 1e3),
        "failures": int(sum(failures)),
    }
