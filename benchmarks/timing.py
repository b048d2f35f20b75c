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


def paired_blocks(
    baseline: Callable[[], object],
    contender: Callable[[], object],
    blocks: int = 200,
    per_block: int = 5,
    warmup: int = 10,
) -> tuple[list[float], list[float], list[float]]:
    """Many short blocks, alternating which side runs first: each block's ratio (contender's median over
    baseline's median in that block), and every sample of each side, in seconds.

    Adjacent blocks see the same machine state, so drift cancels within each
    pair; the median over pairs discards the blocks a noisy neighbour spoiled.
    """
    clock = time.perf_counter
    for _ in range(warmup):
        baseline()
        contender()
    ratios: list[float] = []
    samples: dict[Callable, list[float]] = {baseline: [], contender: []}
    for b in range(blocks):
        medians = {}
        for fn in (baseline, contender) if b % 2 == 0 else (contender, baseline):
            block = []
            for _ in range(per_block):
                start = clock()
                fn()
                block.append(clock() - start)
            medians[fn] = float(np.median(block))
            samples[fn] += block
        ratios.append(medians[contender] / medians[baseline])
    return ratios, samples[baseline], samples[contender]


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
