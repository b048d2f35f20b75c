"""Paired measurements, each in a fresh process.

    python -m popfuse.benchmarks.paired dispatch ARTIFACT INDEX MODEL.onnx REQUEST.npz THREADS FIRST BLOCKS PER_BLOCK
    python -m popfuse.benchmarks.paired switching ARTIFACT REQUESTS.npz THREADS FIRST PAIRS ROUNDS MODEL.onnx MODEL.onnx
    python -m popfuse.benchmarks.paired tenants ARTIFACT REQUESTS.npz THREADS FIRST BLOCKS PER_BLOCK DEPTH \
        INDEX=MODEL.onnx …

Where a process happens to place its memory moves a model's time by a few per
cent for the process's whole life, and so does which contender it creates
first (FIRST: ``direct`` or ``fused``). The suites therefore spread their
samples over several processes that alternate FIRST. REQUEST(S).npz holds
model i's request as arrays named ``<i>/<input name>``. Prints one JSON line.

- ``dispatch``: ``Runner.execute`` on subgraph INDEX against a plain session of
  MODEL.onnx, in alternating blocks: each block's ratio (fused over direct) and
  every sample of each side, in seconds.
- ``switching``: requests alternating between the two models, and the same
  requests in two runs of one model each, on the fused runner and on two
  resident sessions: every latency of each sequence, in seconds.
- ``tenants``: ``dispatch`` for each subgraph INDEX (REQUESTS.npz's request
  ``<INDEX>/…``) against a plain session of its MODEL.onnx, all in one
  process. The same blocks then pair two sessions of plain onnxruntime with the
  last MODEL's first session: a second one (``twin``: how far onnxruntime's
  own time for one model moves between two sessions of it in one process), and
  one of the model run from inside DEPTH nested ``If`` nodes
  (``models.nested_in_ifs``: what onnxruntime itself charges for a dispatch
  tree that deep). Each INDEX's block ratios, the twin's and the nested one's,
  and whether the process runs on jemalloc (preloaded by the caller).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from popfuse.runtime.server.heap import jemalloc_active, preload_env

from .models import nested_in_ifs
from .probe import requests
from .setups import fused_feeds, runner, session
from .timing import paired_blocks


def dispatch(argv: list[str]) -> dict:
    artifact, index, model, request, threads, first, blocks, per_block = argv
    feeds = requests(request)[0]
    made = _in_order(first, lambda: session(model, int(threads)), lambda: runner(artifact, int(threads)))
    direct, fused = made["direct"], made["fused"]
    public = fused_feeds(fused, int(index), feeds)
    ratios, direct_s, fused_s = paired_blocks(
        lambda: direct.run(None, feeds), lambda: fused.execute(public), int(blocks), int(per_block)
    )
    return {"ratios": ratios, "direct": direct_s, "fused": fused_s}


def switching(argv: list[str]) -> dict:
    artifact, request, threads, first, pairs, rounds, *models = argv
    feeds = requests(request)
    made = _in_order(first, lambda: [session(m, int(threads)) for m in models], lambda: runner(artifact, int(threads)))
    resident, fused = made["direct"], made["fused"]
    public = [fused_feeds(fused, i, f) for i, f in enumerate(feeds)]
    alternating, steady = alternating_order(int(pairs)), steady_order(int(pairs))
    out: dict[str, list[float]] = {"fused_alt": [], "fused_steady": [], "resident_alt": [], "resident_steady": []}
    for _ in range(int(rounds)):  # interleaved, so drift hits both alike
        out["fused_alt"] += sequence(lambda i: fused.execute(public[i]), alternating)
        out["fused_steady"] += sequence(lambda i: fused.execute(public[i]), steady)
        out["resident_alt"] += sequence(lambda i: resident[i].run(None, feeds[i]), alternating)
        out["resident_steady"] += sequence(lambda i: resident[i].run(None, feeds[i]), steady)
    return out


def tenants(argv: list[str]) -> dict:
    artifact, request, threads, first, blocks, per_block, depth, *models = argv
    feeds = requests(request)
    pairs = [(int(i), path) for i, path in (m.split("=", 1) for m in models)]

    def plain() -> list[ort.InferenceSession]:
        return [session(path, int(threads)) for _, path in pairs]

    made = _in_order(first, plain, lambda: runner(artifact, int(threads)))
    direct, fused = made["direct"], made["fused"]
    # The floors are made after both contenders in every process, whichever came first: where their memory
    # lies is not spread as the contenders' is, which the twin's own spread over the processes shows.
    twin = session(pairs[-1][1], int(threads))
    nested = session(nested_in_ifs(onnx.load(pairs[-1][1]), int(depth)).SerializeToString(), int(threads))
    ratios: dict[str, list[float]] = {}
    for (index, _), own in zip(pairs, direct):
        public = fused_feeds(fused, index, feeds[index])
        ratios[str(index)] = paired_blocks(lambda own=own, f=feeds[index]: own.run(None, f),
                                           lambda p=public: fused.execute(p), int(blocks), int(per_block))[0]
    last_index, last_plain = pairs[-1][0], direct[-1]
    request = feeds[last_index]
    selected = {**request, "index": np.zeros(1, np.int64)} if int(depth) else request

    def against_last(contender: Callable[[], object]) -> list[float]:
        return paired_blocks(lambda: last_plain.run(None, request), contender, int(blocks), int(per_block))[0]

    return {"ratios": ratios, "twin": against_last(lambda: twin.run(None, request)),
            "nested": against_last(lambda: nested.run(None, selected)), "jemalloc": jemalloc_active()}


def _in_order(first: str, direct: Callable[[], object], fused: Callable[[], object]) -> dict[str, object]:
    make = {"direct": direct, "fused": fused}
    return {name: make[name]() for name in (first, "fused" if first == "direct" else "direct")}


def sequence(request: Callable[[int], object], order: list[int]) -> list[float]:
    """The latency of ``request(i)`` for each i of ``order``, in seconds."""
    times = []
    for i in order:
        start = time.perf_counter()
        request(i)
        times.append(time.perf_counter() - start)
    return times


def alternating_order(pairs: int) -> list[int]:
    """Requests for models 0, 1, 0, 1 …: ``pairs`` switches each way."""
    return [0, 1] * pairs


def steady_order(pairs: int) -> list[int]:
    """The same requests without switches: all for model 0, then all for model 1."""
    return [0] * pairs + [1] * pairs


# Where a process places its memory moves a model's time by a few per cent for the process's whole life,
# either way (measured: the same comparison gave cls 0.95 to 1.06 in different processes; 0.99 to 1.12 for
# one of N = 8 to 128 classifiers), so paired blocks are spread over several fresh processes, which
# alternate which of the two contenders they create first.
PROCESSES = 6


def dispatch_in_processes(artifact: Path, index: int, model: Path, request: Path, threads: int, processes: int,
                          blocks: int, per_block: int, timeout: float = 900) -> list[dict]:
    """``dispatch`` (subgraph ``index`` of ``artifact`` against a plain session of ``model``) in ``processes``
    fresh processes, alternating which contender each creates first: each process's result."""
    return _alternating("dispatch", [artifact, index, model, request, threads], [blocks, per_block], processes,
                        timeout)


def tenants_in_processes(artifact: Path, models: dict[int, Path], request: Path, threads: int, processes: int,
                         blocks: int, per_block: int, depth: int, timeout: float = 900,
                         preload: str | None = None) -> list[dict]:
    """``tenants`` (each subgraph of ``models`` against a plain session of its model, and plain onnxruntime's
    own floors beside them, ``depth`` If levels deep) in ``processes`` fresh processes, alternating which
    contender each creates first, with the C library ``preload`` (jemalloc) in LD_PRELOAD if given: each
    process's result."""
    runs = _alternating("tenants", [artifact, request, threads],
                        [blocks, per_block, depth, *(f"{i}={path}" for i, path in models.items())], processes, timeout,
                        preload_env(preload) if preload else None)
    if any(run["jemalloc"] != bool(preload) for run in runs):  # the loader only warns of a preload it cannot make
        raise RuntimeError(f"the tenants' processes did not all run on {preload or 'the system allocator'}")
    return runs


def _alternating(mode: str, before: Sequence[object], after: Sequence[object], processes: int,
                 timeout: float, env: dict[str, str] | None = None) -> list[dict]:
    """Mode ``mode`` with its arguments ``before`` FIRST and ``after`` it, in ``processes`` fresh processes whose
    FIRST alternates between ``direct`` and ``fused``: each process's result."""
    return [in_fresh_process("popfuse.benchmarks.paired", [
        mode, *map(str, before), "direct" if p % 2 == 0 else "fused", *map(str, after)], timeout=timeout, env=env)
        for p in range(processes)]


def in_fresh_process(module: str, args: Sequence[str], timeout: float = 900,
                     env: dict[str, str] | None = None) -> dict:
    """``python -m MODULE ARGS`` in a new process (with environment ``env``, else this one's); the JSON line it
    printed last."""
    out = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=timeout,
                         env=env)
    if out.returncode != 0:
        raise RuntimeError(f"python -m {module} {' '.join(args)} failed with status {out.returncode}:\n"
                           f"{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def parallel_fresh_processes(module: str, args: Sequence[str], k: int, timeout: float = 900) -> list[dict]:
    """``python -m MODULE ARGS`` in ``k`` new processes at once; the JSON line each printed last."""
    processes = [subprocess.Popen([sys.executable, "-m", module, *args], stdout=subprocess.PIPE, text=True)
                 for _ in range(k)]
    out = []
    for process in processes:
        stdout, _ = process.communicate(timeout=timeout)
        if process.returncode != 0:
            raise subprocess.CalledProcessError(process.returncode, process.args, stdout)
        out.append(json.loads(stdout.strip().splitlines()[-1]))
    return out


def main(argv: list[str]) -> None:
    modes = {"dispatch": dispatch, "switching": switching, "tenants": tenants}
    print(json.dumps(modes[argv[0]](argv[1:])))


if __name__ == "__main__":
    main(sys.argv[1:])
