"""One cold start in a fresh process: load, run every model once, report time and RSS.

    python -m popfuse.benchmarks.probe fused ARTIFACT REQUESTS.npz THREADS
    python -m popfuse.benchmarks.probe sources REQUESTS.npz THREADS MODEL.onnx [MODEL.onnx …]
    python -m popfuse.benchmarks.probe hold K BARRIER (fused … | sources …)
    python -m popfuse.benchmarks.probe ortfile FILE.ort THREADS
    python -m popfuse.benchmarks.probe build FOLDER MODEL.onnx [MODEL.onnx …]

REQUESTS.npz holds model i's request as arrays named ``<i>/<input name>``.
Prints one JSON line: seconds from load to the last first result, seconds to
load, and RSS in bytes before loading, after loading and after running.
``ortfile`` only opens an ORT-format file as the executable cache does, and reports the seconds it took and
the RSS before and after: onnxruntime's own share of a cold start, and of its memory before any run.
``build`` fuses the models into FOLDER and reports the seconds ``popfuse.fusion.build`` took and the sizes it
wrote: a build in a process of its own, as ``popfuse build`` runs, whatever the measuring process holds.
``hold`` does the same as one of K processes started together: once all K have
run every model (a barrier of files in the folder BARRIER), it adds what the
models added to the process's private memory (the pages no other process maps).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

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


def private(pid: int | str = "self") -> int:
    """Bytes of process ``pid``'s pages that no other process maps (Linux; by default this process)."""
    fields = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            key, *rest = line.split()
            if rest and rest[0].isdigit():
                fields[key] = int(rest[0]) * 1024
    return fields["Private_Clean:"] + fields["Private_Dirty:"]


def resident_by_kind() -> dict[str, int]:
    """Bytes resident in this process by what they map (Linux smaps): the executable cache's ORT file, the
    artifact's file, shared libraries, and the anonymous memory of heaps and arenas."""
    out = dict.fromkeys(("executable file", "artifact file", "model files", "libraries", "anonymous"), 0)
    kind = "anonymous"
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split()
            if "-" in head[0] and len(head) >= 5 and not head[0].endswith(":"):
                path = head[5] if len(head) > 5 else ""
                kind = ("executable file" if path.endswith(".ort") else "artifact file" if path.endswith(".popef")
                        else "model files" if path.endswith(".onnx") else "libraries" if ".so" in path
                        else "anonymous")
            elif head[0] == "Rss:":
                out[kind] += int(head[1]) * 1024
    return out


def barrier(folder: Path, k: int, stage: str) -> None:
    """Wait until ``k`` processes have reached ``stage`` (a file each in ``folder``)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{os.getpid()}.{stage}").touch()
    deadline = time.monotonic() + 600
    while len(list(folder.glob(f"*.{stage}"))) < k:
        if time.monotonic() > deadline:
            raise TimeoutError(f"fewer than {k} processes reached {stage}")
        time.sleep(0.05)


def main(argv: list[str]) -> None:
    if argv[0] == "hold":
        k, folder = int(argv[1]), Path(argv[2])
        figures = measure(argv[3:])
        barrier(folder, k, "ran")
        figures["private"] = private() - figures["private_base"]
        barrier(folder, k, "measured")
        print(json.dumps(figures))
        return
    if argv[0] == "build":
        from .models import Workload
        from .setups import build_fused

        workloads = [Workload(Path(m).stem, Path(m), {}) for m in argv[2:]]
        start = time.perf_counter()
        built = build_fused(workloads, Path(argv[1]))
        print(json.dumps({"seconds": time.perf_counter() - start, "popef_path": str(built.popef_path),
                          "artifact_bytes": built.artifact_bytes, "source_bytes": built.source_bytes}))
        return
    if argv[0] == "ortfile":
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(argv[2])
        options.add_session_config_entry("session.use_memory_mapped_ort_model", "1")
        options.add_session_config_entry("session.use_ort_model_bytes_for_initializers", "1")
        base, start = rss(), time.perf_counter()
        _HELD.append(ort.InferenceSession(argv[1], options, providers=["CPUExecutionProvider"]))
        print(json.dumps({"seconds": time.perf_counter() - start, "rss_base": base, "rss_loaded": rss()}))
        return
    print(json.dumps(measure(argv)))


def measure(argv: list[str]) -> dict:
    """Load and run every model once (``fused`` or ``sources``); the figures, and the loaded models kept
    alive until the caller returns."""
    mode = argv[0]
    if mode == "fused":
        from popfuse.runtime import Runner, RuntimeConfig

        artifact, reqs, threads = argv[1], requests(argv[2]), int(argv[3])
        base, private_base, kinds_base = rss(), private(), resident_by_kind()
        start = time.perf_counter()
        runner = Runner(artifact, RuntimeConfig(validate_io_params=False, intra_op_num_threads=threads))
        loaded, loaded_s = rss(), time.perf_counter() - start
        for sub, req in zip(runner.subgraphs, reqs):
            runner.execute({sub.anchor(k): v for k, v in req.items()})
        held = runner
    else:
        reqs, threads, models = requests(argv[1]), int(argv[2]), argv[3:]
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        base, private_base, kinds_base = rss(), private(), resident_by_kind()
        start = time.perf_counter()
        sessions = [ort.InferenceSession(m, options, providers=["CPUExecutionProvider"]) for m in models]
        loaded, loaded_s = rss(), time.perf_counter() - start
        for session, req in zip(sessions, reqs):
            session.run(None, req)
        held = sessions
    seconds = time.perf_counter() - start
    _HELD.append(held)
    return {"seconds": seconds, "loaded_s": loaded_s, "rss_base": base, "rss_loaded": loaded, "rss_run": rss(),
            "private_base": private_base,
            "resident_by_kind": {k: v - kinds_base[k] for k, v in resident_by_kind().items()}}


_HELD: list = []  # what measure() loaded, alive for the process's life


if __name__ == "__main__":
    main(sys.argv[1:])
