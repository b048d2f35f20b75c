"""One cold start in a fresh process: load, run every model once, report time and RSS.

    python -m popfuse.benchmarks.probe fused ARTIFACT REQUESTS.npz THREADS
    python -m popfuse.benchmarks.probe sources REQUESTS.npz THREADS MODEL.onnx [MODEL.onnx …]

REQUESTS.npz holds model i's request as arrays named ``<i>/<input name>``.
Prints one JSON line: seconds from load to the last first result, and RSS in
bytes before loading, after loading and after running.
"""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np
import onnxruntime as ort


def rss() -> int:
    """Resident set size of this process, in bytes (Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def requests(path: str) -> list[dict[str, np.ndarray]]:
    data = np.load(path)
    out: dict[int, dict[str, np.ndarray]] = {}
    for key in data.files:
        i, name = key.split("/", 1)
        out.setdefault(int(i), {})[name] = data[key]
    return [out[i] for i in sorted(out)]


def main(argv: list[str]) -> None:
    mode = argv[0]
    if mode == "fused":
        from popfuse.runtime import Runner, RuntimeConfig

        artifact, reqs, threads = argv[1], requests(argv[2]), int(argv[3])
        base = rss()
        start = time.perf_counter()
        runner = Runner(artifact, RuntimeConfig(validate_io_params=False, intra_op_num_threads=threads))
        loaded = rss()
        for sub, req in zip(runner.subgraphs, reqs):
            runner.execute({sub.anchor(k): v for k, v in req.items()})
    else:
        reqs, threads, models = requests(argv[1]), int(argv[2]), argv[3:]
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        base = rss()
        start = time.perf_counter()
        sessions = [ort.InferenceSession(m, options, providers=["CPUExecutionProvider"]) for m in models]
        loaded = rss()
        for session, req in zip(sessions, reqs):
            session.run(None, req)
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "rss_base": base, "rss_loaded": loaded, "rss_run": rss()}))


if __name__ == "__main__":
    main(sys.argv[1:])
