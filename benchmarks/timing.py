"""Latency measurement: contenders timed in interleaved blocks, so drift hits all alike."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Latency:
    """Per-call latencies of one contender, in seconds."""

    samples: np.ndarray

    @property
    def p50(self) -> float:
        return float(np.percentile(self.samples, 50))

    @property
    def p99(self) -> float:
        return float(np.percentile(self.samples, 99))

    @property
    def mean(self) -> float:
        return float(self.samples.mean())


def paired_ratio(
    baseline: Callable[[], object],
    contender: Callable[[], object],
    blocks: int = 200,
    per_block: int = 5,
    warmup: int = 10,
) -> float:
    """Median over many short blocks of (contender's median / baseline's median) in that block.

    Adjacent blocks see the same machine state, so drift cancels within each
    pair; the median over pairs discards the blocks a noisy neighbour spoiled.
    """
    clock = time.perf_counter
    for _ in range(warmup):
        baseline()
        contender()
    ratios = []
    for b in range(blocks):
        times = {}
        order = (baseline, contender) if b % 2 == 0 else (contender, baseline)
        for fn in order:
            samples = []
            for _ in range(per_block):
                start = clock()
                fn()
                samples.append(clock() - start)
            times[fn] = float(np.median(samples))
        ratios.append(times[contender] / times[baseline])
    return float(np.median(ratios))


def interleaved(
    contenders: Mapping[str, Callable[[], object]],
    rounds: int = 20,
    per_round: int = 50,
    warmup: int = 10,
) -> dict[str, Latency]:
    """Time each contender ``rounds * per_round`` times, alternating blocks of ``per_round`` calls.

    The order of contenders rotates every round, so neither always runs first.
    """
    names = list(contenders)
    for name in names:
        for _ in range(warmup):
            contenders[name]()
    samples: dict[str, list[float]] = {name: [] for name in names}
    clock = time.perf_counter
    for r in range(rounds):
        order = names[r % len(names):] + names[: r % len(names)]
        for name in order:
            fn, out = contenders[name], samples[name]
            for _ in range(per_round):
                start = clock()
                fn()
                out.append(clock() - start)
    return {name: Latency(np.array(v)) for name, v in samples.items()}
