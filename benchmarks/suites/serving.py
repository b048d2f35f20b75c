"""Serving: throughput and p99 at concurrency 1, 8 and 32 on mixed PP-OCR traffic, over HTTP and gRPC.

The fused server (``popfuse serve`` on the det/rec/cls artifact) against the
baseline (one onnxruntime session per model behind the same HTTP and gRPC
stack), each in its own process, loaded by client threads that keep their
connections open and send binary tensors (raw contents over gRPC). Also:
Triton's perf_analyzer against the fused server over both protocols, and the
server's overhead at concurrency 1 over an in-process ``Runner.execute`` of
the same request. Targets: fused throughput at least 0.95x the baseline; gRPC
at least 1.0x HTTP at concurrency 1 and 8; dynamic batching on, against off,
at least 2x the throughput of batch-1 classifier requests.
"""

from __future__ import annotations

import contextlib
import resource
import subprocess
import sys
import time
from collections.abc import Iterator

import numpy as np

from popfuse.runtime import Runner
from popfuse.runtime.server.heap import keep_freed_memory

from .. import perf_analyzer
from ..clients import GrpcClient, HttpClient, Request, closed_loop, grpc_ready
from ..context import Context
from ..models import Workload, ppocr
from ..server_process import ServerProcess, cpu_seconds, free_port
from ..setups import build_fused, fused_feeds, runner
from ..timing import interleaved

CONCURRENCY = (1, 8, 32)
BATCH = ["--max-batch-size", "8", "--max-queue-delay-us", "2000"]
#: perf_analyzer's concurrency levels, on the classifier.
PERF_CONCURRENCY = (1, 2, 4, 8)


def run(ctx: Context) -> dict:
    folder = ctx.workdir / "serving"
    models = [ppocr(n) for n in (("cls",) if ctx.smoke else ("det", "rec", "cls"))]  # the classifier last
    artifact = build_fused(models, folder).popef_path
    threads = str(ctx.threads)
    fused_cmd = [sys.executable, "-m", "popfuse", "serve", str(artifact), "--threads", threads]
    baseline_cmd = [sys.executable, "-m", "popfuse.benchmarks.baseline_server", "--threads", threads,
                    *(f"{w.name}={w.path}" for w in models)]
    requests = {w.name: Request(w.name, w.feeds) for w in models}
    # Requests per load: about a second and a half of work at each concurrency on the benchmark machine.
    mixed_total = {1: ctx.scale(96, 8), 8: ctx.scale(192, 16), 32: ctx.scale(224, 32)}
    pairs, rounds = ctx.scale(6, 1), ctx.scale(2, 1)
    levels = CONCURRENCY[:1] if ctx.smoke else CONCURRENCY
    labels = ("fused", "baseline", "fused_grpc", "baseline_grpc")
    mixed: dict[int, dict[str, list[dict]]] = {c: {label: [] for label in labels} for c in levels}
    single: dict[str, list[dict]] = {"on": [], "off": []}
    cls_request = {"cls": requests["cls"]}
    overhead: dict[str, dict[str, list[float]]] = {}
    perf: list[dict] = []
    call_cost: dict[str, float] = {}
    # Both servers of a pair stay up and take turns: the machine drifts, and each round's ratio compares
    # contenders that saw the same moment. A server process also runs a few per cent faster or slower for its
    # whole life depending on where its memory landed, so several pairs are started, in alternating order.
    for p in range(pairs):
        with _pair({"fused": fused_cmd, "baseline": baseline_cmd}, p) as servers:
            targets = {label: (servers[label.split("_")[0]], "grpc" if label.endswith("grpc") else "http")
                       for label in labels}
            for concurrency in levels:
                _turns(targets, requests, concurrency, mixed_total[concurrency], rounds, mixed[concurrency])
            if p == 0:
                overhead = _overhead(servers["fused"], artifact, requests, ctx)
                perf = _perf_analyzer(servers["fused"], ctx)
                call_cost = _call_cost(servers["fused"], ctx)
        with _pair({"on": fused_cmd + BATCH, "off": fused_cmd}, p) as servers:
            targets = {label: (servers[label], "http") for label in ("on", "off")}
            _turns(targets, cls_request, 32 if not ctx.smoke else 8, ctx.scale(1024, 32), rounds, single)
    rows, grpc_rows = [], []
    for concurrency, results in mixed.items():
        summary = _summary(results, "fused", "baseline")
        rows.append({"concurrency": concurrency, **summary, "throughput_ratio": summary["ratio"]})
        over_baseline = _summary(results, "fused_grpc", "baseline_grpc")
        over_http = _summary(results, "fused_grpc", "fused")
        grpc_rows.append({"concurrency": concurrency, **over_baseline, "throughput_ratio": over_baseline["ratio"],
                          "grpc_over_http": over_http["ratio"], "grpc_over_http_ratios": over_http["ratios"]})
    batching = _summary(single, "on", "off")
    return {"rows": rows, "grpc_rows": grpc_rows, "batching": batching, "batching_ratio": batching["ratio"],
            "batch_size": int(BATCH[1]), "server_pairs": pairs, "overhead": overhead, "perf_analyzer": perf,
            "call_cost": call_cost,
            "compute_bound": _compute_bound(runner(artifact, ctx.threads), len(models) - 1, models[-1],
                                            int(BATCH[1]), ctx)}


def _overhead(server: ServerProcess, artifact, requests: dict[str, Request], ctx: Context) -> list[dict]:
    """Each model's p50 latency at concurrency 1 through the server (HTTP and gRPC) and in this process
    (``Runner.execute`` of the same request), in interleaved blocks. This process keeps freed heap for reuse
    as the server does (``heap.py``), so both sides allocate their outputs alike."""
    keep_freed_memory()
    fused = runner(artifact, ctx.threads)
    rows = []
    for index, (name, request) in enumerate(requests.items()):
        feeds = fused_feeds(fused, index, request.inputs)
        per_block = ctx.scale({"det": 40, "rec": 12, "cls": 80}.get(name, 20), 2)
        samples: dict[str, list[float]] = {"runner": [], "http": [], "grpc": []}
        for _ in range(ctx.scale(5, 1)):
            for _ in range(per_block):
                start = time.perf_counter()
                fused.execute(feeds)
                samples["runner"].append(time.perf_counter() - start)
            for protocol in ("http", "grpc"):
                samples[protocol] += list(_load((server, protocol), {name: request}, 1, per_block)["latencies"])
        p50 = {k: float(np.percentile(v, 50)) * 1e3 for k, v in samples.items()}
        rows.append({"model": name, "runner_p50_ms": p50["runner"], "http_p50_ms": p50["http"],
                     "grpc_p50_ms": p50["grpc"], "http_overhead_ms": p50["http"] - p50["runner"],
                     "grpc_overhead_ms": p50["grpc"] - p50["runner"],
                     "http_ratio": p50["http"] / p50["runner"], "grpc_ratio": p50["grpc"] / p50["runner"]})
    return rows


def _perf_analyzer(server: ServerProcess, ctx: Context) -> list[dict]:
    """Triton's perf_analyzer on the classifier, over HTTP and gRPC, with binary data: each concurrency over
    both protocols in turn, in rounds that alternate which goes first; the median of the rounds. It is set up
    first when it is not there (a smoke run uses it only when it is)."""
    analyzer = perf_analyzer.find() if ctx.smoke else perf_analyzer.install()
    if analyzer is None:
        return []
    shape = {"x": list(ppocr("cls").feeds["x"].shape)}
    levels = PERF_CONCURRENCY[:1] if ctx.smoke else PERF_CONCURRENCY
    ports = {"http": server.port, "grpc": server.grpc_port}
    runs: dict[tuple[str, int], list] = {}
    for r in range(ctx.scale(3, 1)):
        for level in levels:
            for protocol in ("http", "grpc") if r % 2 == 0 else ("grpc", "http"):
                # Where the CPU went, per inference: on a machine of few cores the load generator's own share
                # bounds what the server can be given, and it differs between the protocols' clients.
                served, server_cpu = server.inferences("cls"), server.cpu_seconds()
                client_cpu = _children_cpu()
                (m,) = analyzer.measure(f"127.0.0.1:{ports[protocol]}", protocol, "cls", shape, [level],
                                        window_ms=ctx.scale(2000, 300), trials=ctx.scale(10, 6))
                count = max(server.inferences("cls") - served, 1)
                runs.setdefault((protocol, level), []).append({
                    **{f: getattr(m, f) for f in ("throughput", "p50_us", "p99_us", "server_queue_us",
                                                  "server_compute_us")},
                    "server_cpu_us": 1e6 * (server.cpu_seconds() - server_cpu) / count,
                    "client_cpu_us": 1e6 * (_children_cpu() - client_cpu) / count})
    return [{"protocol": protocol, "concurrency": level,
             **{field: float(np.median([m[field] for m in ms])) for field in ms[0]}}
            for (protocol, level), ms in sorted(runs.items())]


def _call_cost(server: ServerProcess, ctx: Context) -> dict[str, float]:
    """Server CPU µs per liveness check, a call that does no work: over HTTP and gRPC to ``server``, and to a
    bare grpc.aio server (``bare_grpc``). What each protocol's stack costs per call, which an inference pays
    too; the medians of three blocks."""
    calls = ctx.scale(3000, 30)

    def per_call(pid: int, client: HttpClient | GrpcClient) -> float:
        try:
            for _ in range(50):
                if not client.live():
                    raise RuntimeError("a liveness check failed while measuring what a call costs")
            blocks = []
            for _ in range(3):
                before = cpu_seconds(pid)
                for _ in range(calls):
                    client.live()
                blocks.append(1e6 * (cpu_seconds(pid) - before) / calls)
            return float(np.median(blocks))
        finally:
            client.close()

    pid = server.proc.pid
    out = {"http_us": per_call(pid, HttpClient(server.port)), "grpc_us": per_call(pid, GrpcClient(server.grpc_port))}
    port = free_port()
    bare = subprocess.Popen([sys.executable, "-m", "popfuse.benchmarks.bare_grpc", str(port)])
    try:
        client = GrpcClient(port)
        grpc_ready(client.channel)
        out["bare_grpc_us"] = per_call(bare.pid, client)
    finally:
        bare.terminate()
        bare.wait(timeout=60)
    return out


def _children_cpu() -> float:
    """CPU seconds of this process's ended children (perf_analyzer's runs), user and system."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@contextlib.contextmanager
def _pair(commands: dict[str, list[str]], turn: int) -> Iterator[dict[str, ServerProcess]]:
    """Both servers up (started in the order ``turn`` picks); yields them by label."""
    labels = list(commands) if turn % 2 == 0 else list(commands)[::-1]
    with contextlib.ExitStack() as stack:
        yield {label: stack.enter_context(ServerProcess(commands[label])) for label in labels}


def _turns(targets: dict[str, tuple[ServerProcess, str]], requests: dict[str, Request], concurrency: int, total: int,
           rounds: int, into: dict[str, list[dict]]) -> None:
    """Load each target (a server and a protocol) in turn, ``rounds`` times, adding each load's result to
    ``into``; the order alternates between rounds."""
    for r in range(rounds):
        for label in list(into) if r % 2 == 0 else list(into)[::-1]:
            into[label].append(_load(targets[label], requests, concurrency, total))


def _summary(results: dict[str, list[dict]], a: str, b: str) -> dict:
    """The ratio of ``a``'s throughput over ``b``'s (median of the rounds'), and each one's median throughput,
    pooled latency percentiles and failures."""
    ratios = [x["rps"] / y["rps"] for x, y in zip(results[a], results[b])]
    out: dict = {"ratio": float(np.median(ratios)), "ratios": ratios}
    for label in (a, b):
        runs = results[label]
        latencies = np.concatenate([x["latencies"] for x in runs])
        key = label.removesuffix("_grpc")
        out[f"{key}_rps"] = float(np.median([x["rps"] for x in runs]))
        out[f"{key}_p50_ms"] = float(np.percentile(latencies, 50) * 1e3)
        out[f"{key}_p99_ms"] = float(np.percentile(latencies, 99) * 1e3)
        out[f"{key}_failures"] = int(sum(x["failures"] for x in runs))
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


def _load(target: tuple[ServerProcess, str], requests: dict[str, Request], concurrency: int, total: int) -> dict:
    """Closed-loop load: ``concurrency`` clients, each sending its next request when the last returns, until
    ``total`` requests are answered. Client k always sends the same sequence of models (seeded by k), so two
    servers given the same load do exactly the same work, and only their speed sets the throughput."""
    server, protocol = target
    names = list(requests)
    each = -(-total // concurrency)
    sequences = []
    for k in range(concurrency):
        rng = np.random.default_rng(k)
        sequences.append([requests[names[int(rng.integers(len(names)))]] for _ in range(each)])
    connect = (lambda: HttpClient(server.port)) if protocol == "http" else (lambda: GrpcClient(server.grpc_port))
    return closed_loop(connect, sequences, warm=requests[names[0]])  # the connection is up before the clock
