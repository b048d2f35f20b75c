"""Scale-out: popfuse on Ray Serve against Ray Serve's own multiplexing of plain per-model sessions.

Six tenants, each an OCR pipeline of three models (PP-OCR's detector, direction classifier and recogniser,
under names of the tenant's own) fused into one artifact: six artifacts, eighteen models. Two replicas whose
budget holds two artifacts each; the baseline's two replicas hold six sessions each (``@serve.multiplexed``),
two tenants' models, the same bytes. Both behind the same KServe v2 ingress, on one local Ray cluster, taking
turns. Closed-loop clients each run jobs: a tenant drawn by popularity (Zipf, s = 1), then its three models in
order; client k sends the same jobs to both. A smoke run uses small MLPs. Reported per system:
throughput, p50 and p99, loads and evictions per 1,000 requests (from each side's own Ray metrics), and, at
concurrency 1 on a resident tenant, the p50 through Ray against ``popfuse serve`` on the same machine.
Targets: throughput at least 1.0x the baseline; loads per 1,000 at most 0.5x the baseline's; Ray's added
p50 under 5 ms.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import yaml

from ..clients import HttpClient, Request, closed_loop
from ..context import Context
from ..models import Workload, mlp, ppocr
from ..server_process import ServerProcess, free_port
from ..setups import build_fused

TENANTS, MODELS, REPLICAS, HELD = 6, 3, 2, 2
SKIPPED = "needs the ray extra: pip install 'popfuse[ray]'"
#: What each side counts, in Ray's Prometheus export: popfuse's replicas, and Ray's multiplexing.
COUNTERS = {
    "popfuse": ("ray_popfuse_artifact_loads_total", "ray_popfuse_artifact_evictions_total"),
    "baseline": ("ray_serve_multiplexed_models_load_counter_total",
                 "ray_serve_multiplexed_models_unload_counter_total"),
}


def available() -> bool:
    """Whether the ray extra is installed (without importing Ray)."""
    try:
        return importlib.util.find_spec("ray") is not None
    except ValueError:  # a module set to None in sys.modules: unimportable
        return False


def run(ctx: Context) -> dict:
    if not available():
        return {"skipped": SKIPPED}
    import ray
    from ray import serve

    from popfuse.runtime.scaleout.app import application
    from popfuse.runtime.scaleout.catalog import load_catalog

    from .. import baseline_ray

    folder = ctx.workdir / "scaleout"
    folder.mkdir(parents=True, exist_ok=True)
    tenants = _tenants(ctx, folder)
    artifacts = {t: build_fused(ws, folder / t).popef_path.rename(folder / f"{t}.popef") for t, ws in tenants.items()}
    artifact_bytes = max(p.stat().st_size for p in artifacts.values())
    sources_bytes = max(sum(w.path.stat().st_size for w in ws) for ws in tenants.values())
    per_replica = HELD * MODELS  # sessions: HELD tenants' models, the bytes of HELD artifacts
    replicas = {"num_replicas": REPLICAS, "max_ongoing_requests": 4, "ray_actor_options": {"num_cpus": 0.25}}
    ingress = {"max_ongoing_requests": 256, "ray_actor_options": {"num_cpus": 0.25}}
    catalog = folder / "catalog.yaml"
    catalog.write_text(yaml.safe_dump({
        "artifacts": {t: str(p) for t, p in artifacts.items()},
        "replicas": {**replicas, "memory_budget": HELD * artifact_bytes, "workers": 1, "threads": ctx.threads},
        "ingress": ingress,
    }))
    sources = {w.name: str(w.path) for ws in tenants.values() for w in ws}
    feeds = {w.name: w.feeds for ws in tenants.values() for w in ws}

    context = ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level=logging.WARNING,
                       log_to_driver=False, _system_config={"metrics_report_interval_ms": 500})
    try:
        port = free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(application(load_catalog(catalog)), name="popfuse", route_prefix="/popfuse")
        serve.run(baseline_ray.application(sources, per_replica, ctx.threads, replicas, ingress), name="baseline",
                  route_prefix="/baseline")
        metrics = f"http://{context.address_info['node_ip_address']}:{context.address_info['metrics_export_port']}"
        pipelines = [[w.name for w in ws] for ws in tenants.values()]
        command = [sys.executable, "-m", "popfuse", "serve", *map(str, artifacts.values()), "--threads",
                   str(ctx.threads)]
        with ServerProcess(command) as server:
            result = _measure(ctx, port, server.port, f"{metrics}/metrics", feeds, pipelines)
    finally:
        serve.shutdown()
        ray.shutdown()
    return {**result, "tenants": TENANTS, "models_per_artifact": MODELS, "replicas": REPLICAS,
            "artifacts_held": HELD, "sessions_held": per_replica, "artifact_bytes": artifact_bytes,
            "sources_bytes": sources_bytes, "models": "small MLPs" if ctx.smoke else "PP-OCR det, cls, rec"}


def _tenants(ctx: Context, folder: Path) -> dict[str, list[Workload]]:
    """Each tenant's pipeline, under its own model names: PP-OCR's three models (small MLPs in a smoke run)."""
    if ctx.smoke:
        return {f"t{t}": [mlp(folder, f"t{t}_m{k}", seed=MODELS * t + k, width=32) for k in range(MODELS)]
                for t in range(TENANTS)}
    models = [ppocr(name) for name in ("det", "cls", "rec")]  # PaddleOCR's order
    return {f"t{t}": [Workload(f"t{t}_{w.name}", w.path, w.feeds) for w in models] for t in range(TENANTS)}


def _measure(ctx: Context, port: int, serve_port: int, metrics: str, feeds: dict,
             pipelines: list[list[str]]) -> dict:
    requests = {name: Request(name, f) for name, f in feeds.items()}
    clients, jobs = ctx.scale(4, 2), ctx.scale(25, 3)
    sequences = [_jobs(np.random.default_rng(k), pipelines, jobs) for k in range(clients)]
    paths = {"popfuse": "/popfuse", "baseline": "/baseline"}
    # Warm: every tenant once on each side (the cold start is not what is compared).
    warm_up = [[name for pipeline in pipelines for name in pipeline]]
    for prefix in paths.values():
        _load(port, prefix, requests, warm_up)
    runs: dict[str, list[dict]] = {label: [] for label in paths}
    for r in range(ctx.scale(6, 1)):
        for label in list(paths) if r % 2 == 0 else list(paths)[::-1]:
            before = _counts(metrics, label)
            result = _load(port, paths[label], requests, sequences)
            time.sleep(1.5)  # Ray exports its metrics every half second here
            after = _counts(metrics, label)
            runs[label].append({**result, "loads": after[0] - before[0], "evictions": after[1] - before[1]})
    rows = []
    for label, results in runs.items():
        latencies = np.concatenate([x["latencies"] for x in results])
        sent = len(latencies) + sum(x["failures"] for x in results)
        rows.append({
            "system": label, "rps": float(np.median([x["rps"] for x in results])),
            "p50_ms": float(np.percentile(latencies, 50) * 1e3), "p99_ms": float(np.percentile(latencies, 99) * 1e3),
            "loads_per_1000": 1000 * sum(x["loads"] for x in results) / sent,
            "evictions_per_1000": 1000 * sum(x["evictions"] for x in results) / sent,
            "failures": int(sum(x["failures"] for x in results)), "requests": sent,
        })
    ratios = [a["rps"] / b["rps"] for a, b in zip(runs["popfuse"], runs["baseline"])]
    popfuse, baseline = rows
    overhead = _overhead(ctx, port, serve_port, requests, pipelines[0])
    return {"rows": rows, "clients": clients, "throughput_ratio": float(np.median(ratios)), "ratios": ratios,
            "loads_ratio": popfuse["loads_per_1000"] / max(baseline["loads_per_1000"], 1e-9),
            "overhead": overhead, "added_p50_ms": overhead["ray_p50_ms"] - overhead["serve_p50_ms"],
            "proxy_p50_ms": overhead["ray_live_p50_ms"] - overhead["serve_live_p50_ms"]}


def _overhead(ctx: Context, port: int, serve_port: int, requests: dict[str, Request], pipeline: list[str]) -> dict:
    """p50 at concurrency 1 through Ray and through ``popfuse serve``, in alternating blocks: inference on the
    most popular tenant's models (held after the runs), and a liveness check, which the ingress answers
    itself: its time through Ray is Ray Serve's own, from its HTTP proxy to a replica and back."""
    block = [pipeline * ctx.scale(7, 2)]
    live = ctx.scale(20, 4)
    targets = {"ray": (port, "/popfuse"), "serve": (serve_port, "")}
    samples: dict[str, list[np.ndarray]] = {f"{t}{kind}": [] for t in targets for kind in ("", "_live")}
    for b in range(ctx.scale(12, 2)):
        for label in list(targets) if b % 2 == 0 else list(targets)[::-1]:
            target_port, prefix = targets[label]
            samples[label].append(_load(target_port, prefix, requests, block)["latencies"])
            samples[f"{label}_live"].append(_live(target_port, prefix, live))
    p50 = {label: float(np.percentile(np.concatenate(s), 50) * 1e3) for label, s in samples.items()}
    return {f"{label}_p50_ms": value for label, value in p50.items()}


def _live(port: int, prefix: str, count: int) -> np.ndarray:
    """Latencies of ``count`` liveness checks, one at a time."""
    client = HttpClient(port, prefix)
    latencies = []
    for _ in range(count):
        start = time.perf_counter()
        client.live()
        latencies.append(time.perf_counter() - start)
    client.close()
    return np.array(latencies)


def _jobs(rng: np.random.Generator, pipelines: list[list[str]], jobs: int) -> list[str]:
    """A client's requests: ``jobs`` tenants drawn by popularity (Zipf, s = 1), each one's models in order."""
    weights = 1 / np.arange(1, len(pipelines) + 1)
    tenants = rng.choice(len(pipelines), size=jobs, p=weights / weights.sum())
    return [name for t in tenants for name in pipelines[t]]


def _counts(metrics: str, label: str) -> tuple[float, float]:
    """(loads, evictions) so far on side ``label``, summed over its replicas."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(metrics, timeout=30) as response:
        text = response.read().decode()
    sums = dict.fromkeys(COUNTERS[label], 0.0)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in sums and sample.labels.get("application") == label:
                sums[sample.name] += sample.value
    return sums[COUNTERS[label][0]], sums[COUNTERS[label][1]]


def _load(port: int, prefix: str, requests: dict[str, Request], sequences: list[list[str]]) -> dict:
    """Closed loop over HTTP: one client per sequence of model names, each sending its next request when the
    last returns."""
    return closed_loop(lambda: HttpClient(port, prefix), [[requests[name] for name in seq] for seq in sequences])
