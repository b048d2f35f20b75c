"""Scaling in N: build time, load time, artifact size and dispatch overhead for N = 2 … 64.

Target: dispatch overhead must not grow linearly with N. The request goes to
the last subgraph, the deepest in the tree; overhead is what the fused run
adds to a plain session of the same model, from the median ratio of paired
blocks (robust to drift) times the plain session's p50.
"""

from __future__ import annotations

import time

import numpy as np

from ..context import Context
from ..models import mlp
from ..setups import build_fused, fused_feeds, runner, session
from ..timing import paired_blocks


def run(ctx: Context) -> dict:
    folder = ctx.workdir / "scaling"
    folder.mkdir(parents=True, exist_ok=True)
    # Beyond the 16: at 32 and 64, logarithmic and linear growth part clearly.
    sizes = (2, 4) if ctx.smoke else (2, 4, 8, 16, 32, 64)
    models = [mlp(folder, f"mlp{i}", seed=i) for i in range(max(sizes))]
    rows, pairs = [], []
    for n in sizes:
        start = time.perf_counter()
        built = build_fused(models[:n], folder / f"n{n}")
        build_s = time.perf_counter() - start
        start = time.perf_counter()
        fused = runner(built.popef_path, ctx.threads)
        load_s = time.perf_counter() - start
        last = models[n - 1]
        direct = session(last.path, ctx.threads)
        public = fused_feeds(fused, n - 1, last.feeds)
        pairs.append((
            lambda direct=direct, feeds=last.feeds: direct.run(None, feeds),
            lambda fused=fused, public=public: fused.execute(public),
        ))
        rows.append({"n": n, "build_s": build_s, "load_s": load_s, "artifact_bytes": built.artifact_bytes,
                     "sources_bytes": built.source_bytes})
    # Every N is measured in every round, in alternating order: a slow spell of this shared
    # machine then spreads over all N instead of bending the curve at one of them.
    samples: list[tuple[list[float], list[float], list[float]]] = [([], [], []) for _ in sizes]  # ratios, direct, fused
    for r in range(ctx.scale(6, 1)):
        for i in range(len(sizes)) if r % 2 == 0 else reversed(range(len(sizes))):
            got = paired_blocks(*pairs[i], blocks=ctx.scale(10, 2), per_block=ctx.scale(100, 5))
            for into, values in zip(samples[i], got):
                into += values
    for row, (ratio, direct, fused) in zip(rows, samples):
        direct_p50 = float(np.median(direct))
        row.update(
            direct_p50_us=direct_p50 * 1e6,
            fused_p50_us=float(np.median(fused)) * 1e6,
            overhead_us=(float(np.median(ratio)) - 1) * direct_p50 * 1e6,
        )
    return {"rows": rows}
