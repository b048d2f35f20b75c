"""Cold start and memory, each trial in a fresh process.

Cold start: from ``Runner("executable.popef")`` to the first result of every
subgraph, against creating N sessions from the source files and running each
once. Target: at most 0.5×.

Memory: RSS growth after loading and after one run of each model, fused against
N sessions. Targets: at most 1.0×; at most 0.6× when the models share weights
(the same model fused twice; two heads on one backbone).
"""

from __future__ import annotations

import statistics

import numpy as np

from ..context import Context
from ..models import backbone_with_head, ppocr
from ..paired import in_fresh_process
from ..setups import build_fused


def run(ctx: Context) -> dict:
    folder = ctx.workdir / "coldstart"
    folder.mkdir(parents=True, exist_ok=True)
    cases = {"ppocr (det, rec, cls)": [ppocr(n) for n in ("det", "rec", "cls")]}
    if ctx.smoke:
        cases = {"ppocr cls": [ppocr("cls")]}
    cases["same model twice (rec, rec)" if not ctx.smoke else "same model twice (cls, cls)"] = [
        ppocr("rec" if not ctx.smoke else "cls", 0),
        ppocr("rec" if not ctx.smoke else "cls", 1),
    ]
    cases["two heads on one backbone"] = [backbone_with_head(folder, 1), backbone_with_head(folder, 2)]
    rows = []
    for label, workloads in cases.items():
        sub = folder / f"case{len(rows)}"
        artifact = build_fused(workloads, sub).popef_path
        reqs = sub / "requests.npz"
        np.savez(reqs, **{f"{i}/{k}": v for i, w in enumerate(workloads) for k, v in w.feeds.items()})
        fused_args = ["fused", str(artifact), str(reqs), str(ctx.threads)]
        source_args = ["sources", str(reqs), str(ctx.threads), *(str(w.path) for w in workloads)]
        with ctx.own_cache(f"coldstart{len(rows)}") as cache:
            # The first start makes the executable cache, as a host's first start does; the trials start after it.
            first = in_fresh_process("popfuse.benchmarks.probe", fused_args, timeout=600)
            (entry,) = cache.glob("*.ort")
            trials = ctx.scale(5, 1)
            fused, sources, engine = [], [], []
            for _ in range(trials):  # alternate, so both see the same machine state
                fused.append(in_fresh_process("popfuse.benchmarks.probe", fused_args, timeout=600))
                sources.append(in_fresh_process("popfuse.benchmarks.probe", source_args, timeout=600))
                engine.append(in_fresh_process("popfuse.benchmarks.probe", ["ortfile", str(entry), str(ctx.threads)]))
        rows.append(_summarise(label, len(workloads), first, fused, sources, engine))
    return {"rows": rows}


def _summarise(label: str, n: int, first: dict, fused: list[dict], sources: list[dict], engine: list[dict]) -> dict:
    def med(trials, f):
        return statistics.median(f(t) for t in trials)

    def load(t):
        return t["rss_loaded"] - t["rss_base"]

    def run_(t):
        return t["rss_run"] - t["rss_base"]

    return {
        "case": label,
        "models": n,
        "fused_cold_s": med(fused, lambda t: t["seconds"]),
        "sources_cold_s": med(sources, lambda t: t["seconds"]),
        "cold_ratio": med(fused, lambda t: t["seconds"]) / med(sources, lambda t: t["seconds"]),
        "first_cold_s": first["seconds"],
        "first_ratio": first["seconds"] / med(sources, lambda t: t["seconds"]),
        # The least a fused cold start can take on onnxruntime: opening the cached file, then every model's
        # first run, which costs what the sessions' first runs cost.
        "engine_open_s": med(engine, lambda t: t["seconds"]),
        "floor_ratio": (med(engine, lambda t: t["seconds"]) + med(sources, lambda t: t["seconds"] - t["loaded_s"]))
        / med(sources, lambda t: t["seconds"]),
        "fused_rss_loaded_mb": med(fused, load) / 1e6,
        "sources_rss_loaded_mb": med(sources, load) / 1e6,
        "fused_rss_run_mb": med(fused, run_) / 1e6,
        "sources_rss_run_mb": med(sources, run_) / 1e6,
        "rss_loaded_ratio": med(fused, load) / med(sources, load),
        "rss_run_ratio": med(fused, run_) / med(sources, run_),
    }
