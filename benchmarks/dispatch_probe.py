"""One paired dispatch measurement in a fresh process.

    python -m benchmarks.dispatch_probe ARTIFACT INDEX MODEL.onnx REQUEST.npz THREADS FIRST BLOCKS PER_BLOCK

Times ``Runner.execute`` on subgraph INDEX against a plain session of
MODEL.onnx, in alternating blocks. FIRST (``direct`` or ``fused``) is created
first. Where a process happens to place its memory moves either side by a few
per cent for the whole process, so the dispatch suite spreads its blocks over
several processes, each creating the two in turn. Prints one JSON line: each
block's ratio (fused over direct) and every sample of each side, in seconds.
"""

from __future__ import annotations

import json
import sys

from .probe import requests
from .setups import runner, session
from .timing import paired_blocks


def main(argv: list[str]) -> None:
    artifact, index, model, request, threads, first, blocks, per_block = argv
    feeds = requests(request)[0]
    public = {f"graph{index}/{k}": v for k, v in feeds.items()}
    make = {"direct": lambda: session(model, int(threads)), "fused": lambda: runner(artifact, int(threads))}
    made = {name: make[name]() for name in (first, "fused" if first == "direct" else "direct")}
    direct, fused = made["direct"], made["fused"]
    ratios, direct_s, fused_s = paired_blocks(
        lambda: direct.run(None, feeds), lambda: fused.execute(public), int(blocks), int(per_block)
    )
    print(json.dumps({"ratios": ratios, "direct": direct_s, "fused": fused_s}))


if __name__ == "__main__":
    main(sys.argv[1:])
