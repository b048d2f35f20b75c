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

import time
from collections.abc import Callable

import numpy as np

from ..context import Context
from ..models import ppocr
from ..setups import build_fused, fused_feeds, runner, session


def run(ctx: Context) -> dict:
    folder = ctx.workdir / "switching"
    a, b = ppocr("cls"), ppocr("det")
    fused = runner(build_fused([a, b], folder).popef_path, ctx.threads)
    resident = [session(a.path, ctx.threads), session(b.path, ctx.threads)]
    feeds = [a.feeds, b.feeds]
    public = [fused_feeds(0, a), fused_feeds(1, b)]
    pairs = ctx.scale(150, 3)
    reload_pairs = ctx.scale(10, 1)

    def fused_request(i: int) -> None:
        fused.execute(public[i])

    def resident_request(i: int) -> None:
        resident[i].run(None, feeds[i])

    def reload_request(i: int) -> None:
        # One executable at a time: a switch loads the other model before running it.
        session(a.path if i == 0 else b.path, ctx.threads).run(None, feeds[i])

    rounds = ctx.scale(4, 1)
    fused_alt, fused_steady, res_alt, res_steady, reload_alt = [], [], [], [], []
    for _ in range(rounds):  # interleave the strategies, so drift hits them alike
        fused_alt += _sequence(fused_request, _alternating(pairs))
        fused_steady += _sequence(fused_request, _blocks(pairs))
        res_alt += _sequence(resident_request, _alternating(pairs))
        res_steady += _sequence(resident_request, _blocks(pairs))
        reload_alt += _sequence(reload_request, _alternating(reload_pairs))
    fused_cost, fused_se = _difference(fused_alt, fused_steady)
    resident_cost, _ = _difference(res_alt, res_steady)
    reload_cost, _ = _difference(reload_alt, res_steady)
    bound = max(fused_cost + 2 * fused_se, 1e-9)
    return {
        "models": [a.name, b.name],
        "fused_switch_cost_us": fused_cost * 1e6,
        "fused_switch_cost_bound_us": bound * 1e6,
        "resident_switch_cost_us": resident_cost * 1e6,
        "reload_switch_cost_ms": reload_cost * 1e3,
        "reload_over_fused": reload_cost / bound,
        "fused_alternating_ms": float(np.mean(fused_alt)) * 1e3,
        "resident_alternating_ms": float(np.mean(res_alt)) * 1e3,
        "reload_alternating_ms": float(np.mean(reload_alt)) * 1e3,
        "fused_over_resident": float(np.mean(fused_alt) / np.mean(res_alt)),
    }


def _alternating(pairs: int) -> list[int]:
    return [0, 1] * pairs


def _blocks(pairs: int) -> list[int]:
    return [0] * pairs + [1] * pairs


def _sequence(request: Callable[[int], None], order: list[int]) -> list[float]:
    times = []
    for i in order:
        start = time.perf_counter()
        request(i)
        times.append(time.perf_counter() - start)
    return times


def _difference(alternating: list[float], steady: list[float]) -> tuple[float, float]:
    """Mean of alternating minus mean of steady, and the standard error of that difference."""
    x, y = np.asarray(alternating), np.asarray(steady)
    se = float(np.sqrt(x.var(ddof=1) / len(x) + y.var(ddof=1) / len(y))) if len(x) > 1 and len(y) > 1 else 0.0
    return float(x.mean() - y.mean()), se
