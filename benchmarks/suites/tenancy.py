"""The multi-tenant scale: dozens of distinct real models in one artifact, against one plain session each.

Each tenant is a PP-OCR model with its weights moved apart (``models.variant``): nothing deduplicates. For
N = 8, 32 and 128 classifiers (and 8 recognisers), in fresh processes that alternate fused and plain: the time
from loading to the first result of every model, and the RSS after running every model, against creating N
sessions and running each once; the build time per model (the median of three builds, each in a process of its
own, as ``popfuse build`` runs); the artifact's size against the sources; the p50 of five models spread over the
index range against their plain sessions, paired over fresh processes, with a second plain session of the last
one against its first in the same processes (onnxruntime against itself), and one of it under as many nested
``If`` nodes as the tree puts above it (onnxruntime's own floor for the dispatch); the same pairs again in
processes started on jemalloc, wherever a library is found, as ``popfuse serve --memory-allocator jemalloc``
runs (``heap.find_jemalloc``). The executable cache is made by one load first (``first_load_s``), as a host's
first start makes it; the trials measure the loads after it.

Several worker processes: K processes each serving the PP-OCR artifact, against K processes each holding plain
sessions of the three models; every process's private memory (pages no other process maps) once all K have run
every model. The first process holds what the others share; the figure is per extra worker. Served the same way:
``popfuse serve --worker-processes K`` against K baseline servers (``baseline_server``, one plain session per
model, the same HTTP stack), every process's whole private memory once each has answered a request of every
model; the supervisor's own is counted apart.
"""

from __future__ import annotations

import contextlib
import re
import statistics
import sys
import urllib.request
from pathlib import Path

import numpy as np
import tritonclient.http as triton_http

from popfuse.runtime.server.heap import find_jemalloc

from ..context import Context
from ..models import Workload, ppocr, variant
from ..paired import PROCESSES, in_fresh_process, parallel_fresh_processes, tenants_in_processes
from ..probe import private
from ..server_process import ServerProcess
from ..setups import build_fused


def run(ctx: Context) -> dict:
    folder = ctx.workdir / "tenancy"
    folder.mkdir(parents=True, exist_ok=True)
    cases = [("cls", 1), ("cls", 2)] if ctx.smoke else [("cls", 8), ("cls", 32), ("cls", 128), ("rec", 8)]
    jemalloc = find_jemalloc()  # first: a $POPFUSE_JEMALLOC that names no file fails before any work
    rows = [_case(ctx, folder, name, n, jemalloc) for name, n in cases]
    return {"rows": rows, "workers": _workers(ctx, folder)}


def last_depth(n: int) -> int:
    """The ``If`` levels above the last of ``n`` models of equal cost: the dispatch tree is then balanced,
    its ranges divided in the middle, and the last model sits on the deeper side of every division."""
    return (n - 1).bit_length()


def _case(ctx: Context, folder: Path, name: str, n: int, jemalloc: str | None) -> dict:
    sub = folder / f"{name}{n}"
    sub.mkdir(exist_ok=True)
    workloads = [variant(name, i, folder) for i in range(n)]
    # A build of the same models writes the same bytes: its time is the median of a few, each a process of its own.
    builds = [in_fresh_process("popfuse.benchmarks.probe", ["build", str(sub), *(str(w.path) for w in workloads)],
                               timeout=1800) for _ in range(ctx.scale(3, 1))]
    built = builds[-1]
    build_s, artifact = statistics.median(b["seconds"] for b in builds), Path(built["popef_path"])
    requests = sub / "requests.npz"
    np.savez(requests, **{f"{i}/{k}": v for i, w in enumerate(workloads) for k, v in w.feeds.items()})
    fused_args = ["fused", str(artifact), str(requests), str(ctx.threads)]
    plain_args = ["sources", str(requests), str(ctx.threads), *(str(w.path) for w in workloads)]
    with ctx.own_cache(f"tenancy-{name}{n}") as cache:
        first = in_fresh_process("popfuse.benchmarks.probe", fused_args, timeout=1800)  # makes the cache entry
        (entry,) = cache.glob("*.ort")
        engine_args = ["ortfile", str(entry), str(ctx.threads)]
        fused, plain, engine = [], [], []
        for trial in range(ctx.scale(3, 1)):  # alternating, so that all see the same machine
            contenders = ((fused_args, fused), (plain_args, plain), (engine_args, engine))
            for args, into in contenders[:: 1 if trial % 2 == 0 else -1]:
                into.append(in_fresh_process("popfuse.benchmarks.probe", args, timeout=1800))
        sampled = {i: workloads[i].path for i in sorted({0, n // 4, n // 2, 3 * n // 4, n - 1})}
        depth = last_depth(n)

        def paired(preload: str | None = None) -> dict:
            runs = tenants_in_processes(artifact, sampled, requests, ctx.threads, ctx.scale(PROCESSES, 1),
                                        ctx.scale(10, 2), ctx.scale(20, 3), depth, timeout=1800, preload=preload)
            return _p50s(runs, sampled)

        # The same pairs again on jemalloc, as popfuse serve --memory-allocator jemalloc runs: both contenders
        # and the floors alike, in processes started with it preloaded.
        p50s = paired()
        jemalloc_p50s = paired(jemalloc) if jemalloc else None
    fused_s, plain_s = _median(fused, "seconds"), _median(plain, "seconds")
    fused_mb, plain_mb = _median(fused, "rss_run", "rss_base") / 1e6, _median(plain, "rss_run", "rss_base") / 1e6
    # onnxruntime's floor: opening the cached file alone, then every model's first run, which costs what the
    # sessions' first runs cost; its memory once open, before any run adds to it.
    floor_s = _median(engine, "seconds") + statistics.median(t["seconds"] - t["loaded_s"] for t in plain)
    engine_mb = _median(engine, "rss_loaded", "rss_base") / 1e6
    return {
        "model": name, "n": n,
        "build_s": build_s, "build_per_model_s": build_s / n,
        "first_load_s": first["seconds"],
        "fused_first_results_s": fused_s, "sessions_first_results_s": plain_s, "time_ratio": fused_s / plain_s,
        "load_per_model_ms": 1e3 * _median(fused, "loaded_s") / n,
        "fused_rss_mb": fused_mb, "sessions_rss_mb": plain_mb, "rss_ratio": fused_mb / plain_mb,
        "floor_time_ratio": floor_s / plain_s, "engine_rss_mb": engine_mb, "floor_rss_ratio": engine_mb / plain_mb,
        **p50s, "depth": depth, "jemalloc": jemalloc_p50s,
        # Where the RSS of the last trials went, by what it maps.
        "fused_resident_mb": {k: v / 1e6 for k, v in fused[-1]["resident_by_kind"].items()},
        "sessions_resident_mb": {k: v / 1e6 for k, v in plain[-1]["resident_by_kind"].items()},
        "artifact_bytes": built["artifact_bytes"], "sources_bytes": built["source_bytes"],
        "size_ratio": built["artifact_bytes"] / built["source_bytes"],
    }


def _p50s(runs: list[dict], sampled: dict[int, Path]) -> dict:
    """The tenants' p50 ratios: every block of every sampled model in every process; then by process, and by
    model; and the twin's and the If floor's, overall and by process."""
    return {
        "p50_ratio": float(np.median([x for run in runs for r in run["ratios"].values() for x in r])),
        "p50_process_ratios": [float(np.median([x for r in run["ratios"].values() for x in r])) for run in runs],
        "p50_model_ratios": {str(i): float(np.median([x for run in runs for x in run["ratios"][str(i)]]))
                             for i in sampled},
        "twin_ratio": float(np.median([x for run in runs for x in run["twin"]])),
        "twin_process_ratios": [float(np.median(run["twin"])) for run in runs],
        "nested_ratio": float(np.median([x for run in runs for x in run["nested"]])),
        "nested_process_ratios": [float(np.median(run["nested"])) for run in runs],
    }


def _median(trials: list[dict], key: str, base: str | None = None) -> float:
    return statistics.median(t[key] - (t[base] if base else 0) for t in trials)


def _workers(ctx: Context, folder: Path) -> dict:
    workloads = [ppocr(n) for n in (("cls",) if ctx.smoke else ("det", "rec", "cls"))]
    sub = folder / "workers"
    built = build_fused(workloads, sub)
    requests = sub / "requests.npz"
    np.savez(requests, **{f"{i}/{k}": v for i, w in enumerate(workloads) for k, v in w.feeds.items()})
    in_fresh_process("popfuse.benchmarks.probe", ["fused", str(built.popef_path), str(requests), "1"])  # the cache
    k = ctx.scale(3, 2)
    out = {"workers": k}
    for label, args in (("fused", ["fused", str(built.popef_path), str(requests), str(ctx.threads)]),
                        ("sessions", ["sources", str(requests), str(ctx.threads), *(str(w.path) for w in workloads)])):
        held = parallel_fresh_processes("popfuse.benchmarks.probe", ["hold", str(k), str(sub / f"{label}-barrier"),
                                                                      *args], k)
        private = sorted(p["private"] for p in held)
        out[f"{label}_private_mb"] = [p / 1e6 for p in private]
        out[f"{label}_extra_private_mb"] = statistics.median(private[1:]) / 1e6
    out["extra_ratio"] = out["fused_extra_private_mb"] / out["sessions_extra_private_mb"]
    out.update(_served_workers(ctx, built.popef_path, workloads, k))
    return out


def _served_workers(ctx: Context, artifact: Path, workloads: list[Workload], k: int) -> dict:
    """``popfuse serve --worker-processes k`` against k baseline servers: each process's private memory once it
    has answered every model."""
    threads = str(ctx.threads)
    fused = [sys.executable, "-m", "popfuse", "serve", str(artifact), "--worker-processes", str(k),
             "--threads", threads, "--workers", "1"]
    baseline = [sys.executable, "-m", "popfuse.benchmarks.baseline_server", "--threads", threads,
                *(f"{w.name}={w.path}" for w in workloads)]
    with ServerProcess(fused) as server:
        _every_worker_runs_every_model(server.port, workloads, k)
        pid = server.proc.pid
        workers = [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
        fused_private = sorted(private(w) for w in workers)
        supervisor = private(pid)
    with contextlib.ExitStack() as stack:
        servers = [stack.enter_context(ServerProcess(baseline)) for _ in range(k)]
        for server in servers:
            for w in workloads:
                _infer(server.port, w)
        sessions_private = sorted(private(s.proc.pid) for s in servers)
    out = {
        "served_fused_private_mb": [p / 1e6 for p in fused_private],
        "served_sessions_private_mb": [p / 1e6 for p in sessions_private],
        "served_supervisor_private_mb": supervisor / 1e6,
        # Every worker maps the shared pages alike: none holds the others' share, so the median is per worker.
        "served_fused_worker_private_mb": statistics.median(fused_private) / 1e6,
        "served_sessions_worker_private_mb": statistics.median(sessions_private) / 1e6,
        "served_total_ratio": (sum(fused_private) + supervisor) / sum(sessions_private),
    }
    out["served_worker_ratio"] = out["served_fused_worker_private_mb"] / out["served_sessions_worker_private_mb"]
    return out


def _infer(port: int, workload: Workload) -> None:
    """One request of ``workload``'s model over a new connection (so that it may reach any worker)."""
    client = triton_http.InferenceServerClient(f"127.0.0.1:{port}")
    try:
        x = workload.feeds["x"]
        tensor = triton_http.InferInput("x", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x, binary_data=True)
        client.infer(workload.name, [tensor])
    finally:
        client.close()


def _every_worker_runs_every_model(port: int, workloads: list[Workload], k: int) -> None:
    """Send requests over new connections until each of the ``k`` workers has answered every model (their
    metrics, labelled by worker, say which has)."""
    for _ in range(100):
        for w in workloads:
            for _ in range(k):
                _infer(port, w)
        seen: dict[str, set[str]] = {}
        for _ in range(20 * k):  # each scrape reaches one worker
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=60) as response:
                text = response.read().decode()
            for model, worker, count in re.findall(
                    r'^nv_inference_request_success\{model="(\w+)",version="1",worker="(\d+)"\} (\d+)$', text, re.M):
                seen.setdefault(worker, set())
                if int(count):
                    seen[worker].add(model)
        if len(seen) == k and all(len(models) == len(workloads) for models in seen.values()):
            return
    raise RuntimeError(f"not every worker answered every model: {seen}")
