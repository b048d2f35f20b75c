"""Dispatch overhead: Runner.execute on a subgraph against a plain session of its source model.

Targets: at most +3% at p50 on each PP-OCR model; at most +25 µs on a one-layer
model, where the fixed cost dominates.
"""

from __future__ import annotations

from ..context import Context
from ..models import one_layer, ppocr
from ..setups import build_fused, fused_feeds, runner, session
from ..timing import interleaved, paired_ratio


def run(ctx: Context) -> dict:
    folder = ctx.workdir / "dispatch"
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    models = [ppocr("cls")] if ctx.smoke else [ppocr(n) for n in ("det", "rec", "cls")]
    fused = runner(build_fused(models, folder / "ppocr").popef_path, ctx.threads)
    for i, w in enumerate(models):
        rows.append(_compare(ctx, w, fused, i, per_round=ctx.scale(10 if w.name == "rec" else 25, 2)))
    tiny = [one_layer(folder, "one_layer_a", 0), one_layer(folder, "one_layer_b", 1)]
    tiny_runner = runner(build_fused(tiny, folder / "tiny").popef_path, ctx.threads)
    rows.append(_compare(ctx, tiny[1], tiny_runner, 1, per_round=ctx.scale(500, 5)))
    return {"rows": rows}


def _compare(ctx: Context, workload, fused, index: int, per_round: int) -> dict:
    direct = session(workload.path, ctx.threads)
    feeds = workload.feeds
    public = fused_feeds(index, workload)
    lat = interleaved(
        {"direct": lambda: direct.run(None, feeds), "fused": lambda: fused.execute(public)},
        rounds=ctx.scale(20, 2),
        per_round=per_round,
        warmup=ctx.scale(10, 1),
    )
    d, f = lat["direct"], lat["fused"]
    # The ratio the target is judged on: many short paired blocks, robust to drift (noise floor ±1%).
    paired = paired_ratio(
        lambda: direct.run(None, feeds),
        lambda: fused.execute(public),
        blocks=ctx.scale(150, 4),
        per_block=3 if workload.name == "rec" else 5,
    )
    return {
        "model": workload.name,
        "direct_p50_us": d.p50 * 1e6,
        "fused_p50_us": f.p50 * 1e6,
        "direct_p99_us": d.p99 * 1e6,
        "fused_p99_us": f.p99 * 1e6,
        "p50_ratio": paired,
        "p99_ratio": f.p99 / d.p99,
        "p50_overhead_us": (f.p50 - d.p50) * 1e6,
    }
