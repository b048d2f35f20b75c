"""Model switching: requests alternate A, B, A, B …

Compared with (a) one executable at a time, reloaded on every switch, which is
what a single-executable device does without fusion (target: at least 100×
lower cost per switch), and (b) N resident sessions (target: within 5%).

Cost per switch = mean latency of the alternating sequence minus mean latency
of the same requests without switches (all A, then all B). For the fused
runner that difference is at noise level, so its ratio uses an upper bound of
the fused cost (mean + 2 standard errors): a conservative, lower-bound ratio.
"""

from __future__ import annotations

import numpy as np

from ..context import Context
from ..models import ppocr
from ..paired import alternating_order, in_fresh_process, sequence, steady_order
from ..setups import build_fused, session

# Fresh processes for the fused-against-resident comparison, alternating which they create first (``paired``).
PROCESSES = 4


def run(ctx: Context) -> dict:
    folder = ctx.workdir / "switching"
    a, b = ppocr("cls"), ppocr("det")
    artifact = build_fused([a, b], folder).popef_path
    request = folder / "requests.npz"
    np.savez(request, **{f"{i}/{k}": v for i, w in enumerate((a, b)) for k, v in w.feeds.items()})
    pairs, rounds = ctx.scale(150, 3), ctx.scale(2, 1)
    runs = [in_fresh_process("popfuse.benchmarks.paired", ["switching", str(artifact), str(request), str(ctx.threads),
                                                   "direct" if p % 2 == 0 else "fused", str(pairs), str(rounds),
                                                   str(a.path), str(b.path)])
            for p in range(ctx.scale(PROCESSES, 1))]
    pooled = {k: [x for r in runs for x in r[k]] for k in runs[0]}
    feeds = [a.feeds, b.feeds]
    resident = [session(a.path, ctx.threads), session(b.path, ctx.threads)]
    res_steady = sequence(lambda i: resident[i].run(None, feeds[i]), steady_order(ctx.scale(10, 1)))
    # One executable at a time: a switch loads the other model before running it.
    reload_alt = sequence(lambda i: session((a, b)[i].path, ctx.threads).run(None, feeds[i]),
                           alternating_order(ctx.scale(10, 1)))
    fused_cost, fused_se = _difference(pooled["fused_alt"], pooled["fused_steady"])
    resident_cost, _ = _difference(pooled["resident_alt"], pooled["resident_steady"])
    reload_cost, _ = _difference(reload_alt, res_steady)
    bound = max(fused_cost + 2 * fused_se, 1e-9)
    return {
        "models": [a.name, b.name],
        "processes": len(runs),
        "fused_switch_cost_us": fused_cost * 1e6,
        "fused_switch_cost_bound_us": bound * 1e6,
        "resident_switch_cost_us": resident_cost * 1e6,
        "reload_switch_cost_ms": reload_cost * 1e3,
        "reload_over_fused": reload_cost / bound,
        "fused_alternating_ms": float(np.mean(pooled["fused_alt"])) * 1e3,
        "resident_alternating_ms": float(np.mean(pooled["resident_alt"])) * 1e3,
        "reload_alternating_ms": float(np.mean(reload_alt)) * 1e3,
        # Each process's own ratio of means, then their median: one unlucky process does not decide.
        "fused_over_resident": float(np.median([np.mean(r["fused_alt"]) / np.mean(r["resident_alt"]) for r in runs])),
    }


def _difference(alternating: list[float], steady: list[float]) -> tuple[float, float]:
    """Mean of alternating minus mean of steady, and the standard error of that difference."""
    x, y = np.asarray(alternating), np.asarray(steady)
    se = float(np.sqrt(x.var(ddof=1) / len(x) + y.var(ddof=1) / len(y))) if len(x) > 1 and len(y) > 1 else 0.0
    return float(x.mean() - y.mean()), se
