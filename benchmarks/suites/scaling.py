"""Scaling in N: build time, load time, artifact size and dispatch overhead for N = 2 … 16.

Target: dispatch overhead must not grow linearly with N. The request goes to
the last subgraph, the deepest in the tree; overhead is fused p50 minus the
p50 of a plain session of the same model, measured interleaved.
"""

from __future__ import annotations

import time

from ..context import Context
from ..models import mlp
from ..setups import build_fused, fused_feeds, runner, session
from ..timing import interleaved


def run(ctx: Context) -> dict:
    folder = ctx.workdir / "scaling"
    folder.mkdir(parents=True, exist_ok=True)
    sizes = (2, 4) if ctx.smoke else (2, 4, 8, 16)
    models = [mlp(folder, f"mlp{i}", seed=i) for i in range(max(sizes))]
    rows = []
    for n in sizes:
        start = time.perf_counter()
        built = build_fused(models[:n], folder / f"n{n}")
        build_s = time.perf_counter() - start
        start = time.perf_counter()
        fused = runner(built.popef_path, ctx.threads)
        load_s = time.perf_counter() - start
        last = models[n - 1]
        direct = session(last.path, ctx.threads)
        public = fused_feeds(n - 1, last)
        lat = interleaved(
            {
                "direct": lambda direct=direct, feeds=last.feeds: direct.run(None, feeds),
                "fused": lambda fused=fused, public=public: fused.execute(public),
            },
            rounds=ctx.scale(20, 2),
            per_round=ctx.scale(300, 5),
        )
        rows.append(
            {
                "n": n,
                "build_s": build_s,
                "load_s": load_s,
                "artifact_bytes": built.artifact_bytes,
                "sources_bytes": built.source_bytes,
                "direct_p50_us": lat["direct"].p50 * 1e6,
                "fused_p50_us": lat["fused"].p50 * 1e6,
                "overhead_us": (lat["fused"].p50 - lat["direct"].p50) * 1e6,
            }
        )
    return {"rows": rows}
