"""Serving: throughput and p99 at concurrency 1, 8 and 32 on mixed PP-OCR traffic.

The fused server (``popfuse serve`` on the det/rec/cls artifact) against the
baseline (one onnxruntime session per model behind the same HTTP stack), each
in its own process, loaded by client threads that keep their connections
open and send binary tensors. Targets: fused throughput at least 0.95x the
baseline; dynamic batching on, against off, at least 2x the throughput of
batch-1 classifier requests.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence

import numpy as np

from popfuse.runtime import Runner

from ..context import Context
from ..models import Workload, ppocr
from ..setups import build_fused, fused_feeds, runner
from ..timing import interleaved

CONCURRENCY = (1, 8, 32)
BATCH = ["--max-batch-size", "8", "--max-queue-delay-us", "2000"]


def run(ctx: Context) -> dict:
    folder = ctx.workdir / "serving"
    models = [ppocr(n) for n in ("det", "rec", "cls")]
    artifact = build_fused(models, folder).popef_path
    threads = str(ctx.threads)
    fused_cmd = [sys.executable, "-m", "popfuse", "serve", str(artifact), "--threads", threads]
    baseline_cmd = [sys.executable, "-m", "popfuse.benchmarks.baseline_server", "--threads", threads,
                    *(f"{w.name}={w.path}" for w in models)]
    bodies = {w.name: _body(w.feeds["x"]) for w in models}
    # Requests per load: about a second and a half of work at each concurrency on the benchmark machine.
    mixed_total = {1: ctx.scale(96, 8), 8: ctx.scale(192, 16), 32: ctx.scale(224, 32)}
    pairs, rounds = ctx.scale(6, 1), ctx.scale(2, 1)
    levels = CONCURRENCY[:2] if ctx.smoke else CONCURRENCY
    mixed: dict[int, dict[str, list[dict]]] = {c: {"fused": [], "baseline": []} for c in levels}
    single: dict[str, list[dict]] = {"on": [], "off": []}
    cls_body = {"cls": bodies["cls"]}
    # Both servers of a pair stay up and take turns: the machine drifts, and each round's ratio compares two
    # contenders that saw the same moment. A server process also runs a few per cent faster or slower for its
    # whole life depending on where its memory landed, so several pairs are started, in alternating order.
    for p in range(pairs):
        with _pair({"fused": fused_cmd, "baseline": baseline_cmd}, p) as ports:
            for concurrency in levels:
                _turns(ports, bodies, concurrency, mixed_total[concurrency], rounds, mixed[concurrency])
        with _pair({"on": fused_cmd + BATCH, "off": fused_cmd}, p) as ports:
            _turns(ports, cls_body, 32 if not ctx.smoke else 8, ctx.scale(1024, 32), rounds, single)
    rows = []
    for concurrency, results in mixed.items():
        summary = _summary(results)
        rows.append({"concurrency": concurrency, **summary, "throughput_ratio": summary["ratio"]})
    batching = _summary(single)
    return {"rows": rows, "batching": batching, "batching_ratio": batching["ratio"], "batch_size": int(BATCH[1]),
            "server_pairs": pairs,
            "compute_bound": _compute_bound(runner(artifact, ctx.threads), 2, models[2], int(BATCH[1]), ctx)}


@contextlib.contextmanager
def _pair(commands: dict[str, list[str]], turn: int) -> Iterator[dict[str, int]]:
    """Both servers up (started in the order ``turn`` picks); yields their ports by label."""
    labels = list(commands) if turn % 2 == 0 else list(commands)[::-1]
    with contextlib.ExitStack() as stack:
        yield {label: stack.enter_context(_Server(commands[label])) for label in labels}


def _turns(ports: dict[str, int], bodies, concurrency: int, total: int, rounds: int,
           into: dict[str, list[dict]]) -> None:
    """Load each server in turn, ``rounds`` times, adding each load's result to ``into``."""
    for r in range(rounds):
        for label in list(into) if r % 2 == 0 else list(into)[::-1]:
            into[label].append(_load(ports[label], bodies, concurrency, total))


def _summary(results: dict[str, list[dict]]) -> dict:
    """The ratio of the first label's throughput over the second's (median of the rounds'), and each one's
    median throughput, pooled latency percentiles and failures."""
    a, b = results
    ratios = [x["rps"] / y["rps"] for x, y in zip(results[a], results[b])]
    out: dict = {"ratio": float(np.median(ratios)), "ratios": ratios}
    for label, runs in results.items():
        latencies = np.concatenate([x["latencies"] for x in runs])
        out[f"{label}_rps"] = float(np.median([x["rps"] for x in runs]))
        out[f"{label}_p50_ms"] = float(np.percentile(latencies, 50) * 1e3)
        out[f"{label}_p99_ms"] = float(np.percentile(latencies, 99) * 1e3)
        out[f"{label}_failures"] = int(sum(x["failures"] for x in runs))
    return out


def _compute_bound(fused: Runner, index: int, workload: Workload, batch: int, ctx: Context) -> dict:
    """Subgraph ``index``'s own time per request at batch 1 and stacked ``batch`` high, in one process:
    the most batching can gain when nothing but compute is counted."""
    one = fused_feeds(fused, index, workload.feeds)
    stacked = {k: np.ascontiguousarray(np.repeat(v, batch, 0)) for k, v in one.items()}
    lat = interleaved({"one": lambda: fused.execute(one), "stacked": lambda: fused.execute(stacked)},
                      rounds=ctx.scale(10, 1), per_round=ctx.scale(5, 1), warmup=ctx.scale(3, 1))
    per_item = lat["stacked"].p50 / batch
    return {"batch1_ms": lat["one"].p50 * 1e3, "per_item_ms": per_item * 1e3, "ratio": lat["one"].p50 / per_item}


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


def _load(port: int, bodies: dict[str, tuple[bytes, dict]], concurrency: int, total: int) -> dict:
    """Closed-loop load: ``concurrency`` clients, each sending its next request when the last returns, until
    ``total`` requests are answered. Client k always sends the same sequence of models (seeded by k), so two
    servers given the same load do exactly the same work, and only their speed sets the throughput."""
    names = list(bodies)
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    failures = [0] * concurrency
    start_gate = threading.Barrier(concurrency + 1)
    each = -(-total // concurrency)

    def client(k: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        rng = np.random.default_rng(k)
        warm_body, warm_headers = bodies[names[0]]
        conn.request("POST", f"/v2/models/{names[0]}/infer", body=warm_body, headers=warm_headers)
        conn.getresponse().read()
        start_gate.wait()
        for _ in range(each):
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
    start_gate.wait()
    began = time.perf_counter()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - began
    flat = np.array([x for per in latencies for x in per]) if any(latencies) else np.array([np.nan])
    return {"rps": len(flat) / elapsed, "latencies": flat, "failures": int(sum(failures))}
