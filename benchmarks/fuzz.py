"""Fuzzing the artifact reader: mutants of real artifacts, opened as ``Runner`` and ``popfuse dump`` open them.

Two families of mutants:

- **raw**: bytes of the file flipped, overwritten, cut, inserted, deleted or appended, as damage does;
- **forged**: an edit inside one blob (a byte of any blob, a field of the metadata or the fusion map, a byte
  of the decompressed executable, the size a compressed blob declares, a weight), or of the blob list
  (dropped, repeated, renamed, retyped, swapped), after which the file is written again with every checksum
  and digest recomputed and, half the time, the metadata's blob sizes made to agree, as someone editing the
  file on purpose would. A signed artifact's forged mutants keep its signature, drop it, or are signed again
  with another key.

Each mutant is opened with ``popfuse dump`` (``describe``, ``render`` and the ``--json`` form) and with
``Runner``; when it loads, every subgraph runs the target's request and its outputs are compared with the
intact artifact's. A mutant comes out as one of: refused with popfuse's own error (typed), an exception of
another class (untyped), loaded with the right outputs, loaded with wrong outputs, or, in the worker
processes of ``run``, a crash, a hang (past ``timeout_s``) or a memory blow-up (past ``memory_mb``).

Run it with ``python -m popfuse.benchmarks.fuzz --mutants 100000``; the test suite draws a bounded number
of mutants through hypothesis (tests/benchmarks/test_fuzz.py).
"""

from __future__ import annotations

import argparse
import collections
import json
import multiprocessing
import os
import random
import resource
import struct
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from popfuse.runtime import PopfuseError, Runner, RuntimeConfig
from popfuse.runtime.artifact import FUSION_MAP_BLOB, MAX_EXECUTABLE_BYTES, MAX_RECORD_BYTES
from popfuse.runtime.compression import compress, decompress
from popfuse.runtime.dump import describe, render
from popfuse.runtime.popef import Blob, BlobType, iter_encoded, read_blobs

#: How a mutant came out.
TYPED, UNTYPED, CORRECT, WRONG, CRASH, HANG, MEMORY = "typed", "untyped", "correct", "wrong", "crash", "hang", "memory"


@dataclass(frozen=True)
class Target:
    """An intact artifact to mutate, a request per subgraph (anchor name → array), and the keys to trust
    (PEM bytes)."""

    name: str
    data: bytes
    feeds: tuple[dict[str, np.ndarray], ...]
    trusted_keys: tuple[bytes, ...] = ()
    #: Another key's signer, for forged mutants signed again by someone else (signed targets only).
    other_key: bytes | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Outcome:
    """What opening one mutant did: its kind, and for an untyped exception, its class and where it rose."""

    kind: str
    detail: str = ""


def mutant(target: Target, index: int, seed: int, forged: bool) -> tuple[bytes, str]:
    """Mutant ``index`` of ``target`` (the same bytes for the same arguments) and the edit that made it."""
    rng = random.Random(f"{seed}:{target.name}:{index}:{forged}")
    while True:  # an edit that changed nothing (a value swapped with itself …) is drawn again
        data, what = _forged(target, rng) if forged else _raw(target.data, rng)
        if data != target.data:
            return data, what


def open_mutant(data: bytes, target: Target, reference: Sequence[dict[str, np.ndarray]], folder: Path) -> Outcome:
    """Open ``data`` as ``popfuse dump`` and ``Runner`` do, and say how it came out."""
    path = folder / "mutant.popef"
    path.write_bytes(data)
    try:
        info = describe(path)
        render(info)
        json.dumps(info)
    except PopfuseError:
        pass
    except MemoryError:
        return Outcome(MEMORY, "dump")
    except Exception as e:  # what the fuzzer is here to find
        return Outcome(UNTYPED, _where(e, "dump"))
    try:
        runner = Runner(path, RuntimeConfig(trusted_keys=target.trusted_keys))
        got = [runner.execute(feeds) for feeds in target.feeds]
    except PopfuseError:
        return Outcome(TYPED)
    except MemoryError:
        return Outcome(MEMORY, "runner")
    except Exception as e:
        return Outcome(UNTYPED, _where(e, "runner"))
    same = all(_same(a, b) for a, b in zip(got, reference))
    return Outcome(CORRECT if same else WRONG)


def reference_outputs(target: Target, folder: Path) -> list[dict[str, np.ndarray]]:
    """The intact artifact's outputs for the target's requests."""
    path = folder / "intact.popef"
    path.write_bytes(target.data)
    runner = Runner(path, RuntimeConfig(trusted_keys=target.trusted_keys))
    return [runner.execute(feeds) for feeds in target.feeds]


# -- mutations --------------------------------------------------------------------------------------------


def _raw(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    out = bytearray(data)
    kind = rng.choice(("flip", "overwrite", "cut", "append", "insert", "delete", "repeat")) if out else "append"
    at = _position(out, rng)
    if kind == "flip":
        out[min(at, len(out) - 1)] ^= 1 << rng.randrange(8)
    elif kind == "overwrite":
        span = rng.choice((1, 2, 4, 8, 32))
        out[at : at + span] = rng.randbytes(len(out[at : at + span]))
    elif kind == "cut":
        del out[at:]
    elif kind == "append":
        out += rng.randbytes(rng.choice((1, 7, 64, 4096)))
    elif kind == "insert":
        out[at:at] = rng.randbytes(rng.choice((1, 3, 64)))
    elif kind == "delete":
        del out[at : at + rng.choice((1, 3, 64))]
    else:
        span = rng.choice((8, 60, 512))
        out[at:at] = out[at : at + span]
    return bytes(out), f"raw {kind} at {at}"


def _position(data: bytearray | bytes, rng: random.Random) -> int:
    # Half the edits land in the first 4 KB, where the headers and the records are.
    limit = len(data) if rng.random() < 0.5 else min(len(data), 4096)
    return rng.randrange(max(limit, 1))


def _forged(target: Target, rng: random.Random) -> tuple[bytes, str]:
    blobs = read_blobs(target.data)
    signature = blobs.pop() if blobs[-1].type == BlobType.SIGNATURE else None
    edit = rng.choice(_FORGERIES)
    what = edit(blobs, rng)
    if rng.random() < 0.5:
        _agree_sizes(blobs)
        what += ", sizes made to agree"
    if signature is None:
        return b"".join(iter_encoded(blobs)), f"forged {what}"
    choice = rng.choice(("kept", "dropped", "resigned"))
    if choice == "dropped":
        return b"".join(iter_encoded(blobs)), f"forged {what}, signature dropped"
    if choice == "resigned" and target.other_key is not None:
        return b"".join(iter_encoded(blobs, _signer(target.other_key))), f"forged {what}, signed by another key"
    return b"".join(iter_encoded(blobs, lambda _: signature)), f"forged {what}, signature kept"


def _blob_bytes(blobs: list[Blob], rng: random.Random) -> str:
    i = rng.randrange(len(blobs))
    payload, what = _raw(bytes(blobs[i].payload), rng)
    blobs[i] = Blob(blobs[i].type, blobs[i].name, payload)
    return f"{what.removeprefix('raw ')} of blob {blobs[i].name!r}"


def _record(blobs: list[Blob], rng: random.Random) -> str:
    i = rng.choice([k for k, b in enumerate(blobs) if b.type == BlobType.METADATA or b.name == FUSION_MAP_BLOB])
    doc = _json(blobs[i])
    paths = list(_paths(doc, ()))
    path = rng.choice(paths)
    what = _edit_json(doc, path, paths, rng)
    blobs[i] = _with_json(blobs[i], doc)
    return f"{blobs[i].name} {'.'.join(map(str, path))}: {what}"


def _executable(blobs: list[Blob], rng: random.Random) -> str:
    i = next(k for k, b in enumerate(blobs) if b.type == BlobType.EXECUTABLE)
    graph, what = _raw(decompress(blobs[i].payload, MAX_EXECUTABLE_BYTES, "the executable"), rng)
    blobs[i] = Blob(blobs[i].type, blobs[i].name, compress(graph))
    return f"executable graph {what.removeprefix('raw ')}"


def _declared_size(blobs: list[Blob], rng: random.Random) -> str:
    """A compressed blob whose frame declares another decompressed size, its stream kept."""
    i = rng.choice([k for k, b in enumerate(blobs) if b.type in (BlobType.METADATA, BlobType.EXECUTABLE)
                    or b.name == FUSION_MAP_BLOB])
    payload = bytes(blobs[i].payload)
    (size,) = struct.unpack_from("<Q", payload)
    new = rng.choice((0, 1, size - 1, size + 1, size * 2, MAX_RECORD_BYTES + 1, MAX_EXECUTABLE_BYTES + 1, 2**64 - 1))
    blobs[i] = Blob(blobs[i].type, blobs[i].name, struct.pack("<Q", max(new, 0)) + payload[8:])
    return f"declared size of {blobs[i].name} {size} -> {new}"


def _json(blob: Blob) -> Any:
    return json.loads(decompress(blob.payload, MAX_RECORD_BYTES, blob.name))


def _with_json(blob: Blob, doc: Any) -> Blob:
    return Blob(blob.type, blob.name, compress(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()))


def _weight(blobs: list[Blob], rng: random.Random) -> str:
    tensors = [k for k, b in enumerate(blobs) if b.type == BlobType.TENSOR]
    if not tensors:
        return _blob_bytes(blobs, rng)
    i = rng.choice(tensors)
    data = bytearray(blobs[i].payload)
    at = rng.randrange(len(data))
    data[at] ^= 1 << rng.randrange(8)
    blobs[i] = Blob(blobs[i].type, blobs[i].name, bytes(data))
    return f"weight byte {at} flipped"


def _blob_list(blobs: list[Blob], rng: random.Random) -> str:
    kind = rng.choice(("drop", "repeat", "swap", "rename", "retype"))
    i, j = rng.randrange(len(blobs)), rng.randrange(len(blobs))
    if kind == "drop" and len(blobs) > 1:
        del blobs[i]
    elif kind == "repeat":
        blobs.insert(j, blobs[i])
    elif kind == "swap":
        blobs[i], blobs[j] = blobs[j], blobs[i]
    elif kind == "rename":
        blobs[i] = Blob(blobs[i].type, rng.choice((blobs[j].name, "", "x" * 300, "é")), blobs[i].payload)
    else:
        blobs[i] = Blob(rng.choice((1, 2, 3, 4, 5, 77)), blobs[i].name, blobs[i].payload)
    return f"blob list {kind} {i} {j}"


_FORGERIES: tuple[Callable[[list[Blob], random.Random], str], ...] = (
    _record, _record, _record, _record, _blob_bytes, _executable, _declared_size, _weight, _blob_list,
)


def _agree_sizes(blobs: list[Blob]) -> None:
    """Make the metadata's blob list state each blob's new size, when the metadata still parses."""
    try:
        meta = _json(blobs[0])
        sizes = {(b.type, b.name): len(b.payload) for b in blobs[1:]}
        for ref in meta["blobs"]:
            ref["size"] = sizes.get((ref["type"], ref["name"]), ref["size"])
    except (PopfuseError, ValueError, KeyError, TypeError, IndexError):
        return
    blobs[0] = _with_json(blobs[0], meta)


def _paths(doc: Any, prefix: tuple) -> Any:
    yield prefix
    items = doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else ()
    for key, value in items:
        yield from _paths(value, (*prefix, key))


def _edit_json(doc: Any, path: tuple, paths: list[tuple], rng: random.Random) -> str:
    if not path:
        return "kept"
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    key = path[-1]
    value = parent[key]
    kind = rng.choice(("type", "number", "swap", "delete", "nest", "string", "duplicate"))
    if kind == "type":
        parent[key] = rng.choice((None, True, 0, -1, 1.5, "", "x", [], {}, [1], {"a": 1}, 2**64, -(2**63)))
    elif kind == "number" and isinstance(value, (int, float)) and not isinstance(value, bool):
        parent[key] = rng.choice((value + 1, value - 1, -value, 0, -1, value * 2, 2**31, 2**63, 10**30))
    elif kind == "swap":
        other = rng.choice(paths)
        source = doc
        for k in other:
            source = source[k]
        parent[key] = json.loads(json.dumps(source))
    elif kind == "delete" and isinstance(parent, (dict, list)):
        del parent[key]
    elif kind == "nest":
        parent[key] = json.loads("[" * 40 + "1" + "]" * 40)
    elif kind == "string":
        parent[key] = rng.choice(("", "\x00", "é" * 100, "a" * 100_000, "graph0/X", "index", "../x", "F33"))
    elif isinstance(parent, list):
        parent.insert(key, json.loads(json.dumps(value)))
    else:
        parent[key] = [value, value]
    return kind


def _signer(raw_private_key: bytes) -> Callable[[bytes], Blob]:
    from cryptography.hazmat.primitives.asymmetric import ed25519
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    key = ed25519.Ed25519PrivateKey.from_private_bytes(raw_private_key)
    public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return lambda statement: Blob(BlobType.SIGNATURE, "ed25519", public + key.sign(statement))


def _same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return a.keys() == b.keys() and all(
        a[k].shape == b[k].shape and a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k], equal_nan=True)
        for k in a
    )


def _edit_kind(what: str) -> str:
    """The family of a forged edit, from its description: weights, executable, records, blob bytes, blob list."""
    for prefix, kind in (("forged weight", "weight"), ("forged executable", "executable"),

                         ("forged blob list", "blob list"), ("forged declared size", "declared size"),
                         ("forged metadata", "metadata record"),
                         ("forged fusion_map", "fusion map record")):
        if what.startswith(prefix):
            return kind
    return "blob bytes"


def _where(error: BaseException, stage: str) -> str:
    frames = traceback.extract_tb(error.__traceback__)
    ours = [f for f in frames if "popfuse" in f.filename or "/runtime/" in f.filename] or frames
    last = ours[-1] if ours else None
    at = f"{Path(last.filename).name}:{last.lineno} {last.name}" if last else "?"
    return f"{stage}: {type(error).__name__} at {at}"


# -- the targets ----------------------------------------------------------------------------------------------


def small_targets(folder: Path) -> list[Target]:
    """A fusion of three small models (two MLPs with weights in the tensor blob, one Add), unsigned and signed."""
    from cryptography.hazmat.primitives.asymmetric import ed25519
    from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

    from popfuse.benchmarks.models import mlp, one_layer

    workloads = [mlp(folder, "mlp_a", 1, width=32, layers=2), mlp(folder, "mlp_b", 2, width=32, layers=2),
                 one_layer(folder)]
    keys = [ed25519.Ed25519PrivateKey.generate() for _ in range(2)]
    pem = folder / "signing.pem"
    pem.write_bytes(keys[0].private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    unsigned = _build(folder / "unsigned", workloads, None)
    signed = _build(folder / "signed", workloads, pem)
    feeds = _feeds(unsigned, workloads)
    public = keys[0].public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    other = keys[1].private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    return [Target("small", unsigned, feeds), Target("small-signed", signed, feeds, (public,), other)]


def ppocr_target(folder: Path) -> Target:
    """The PP-OCR fusion (det, rec, cls), unsigned."""
    from popfuse.benchmarks.models import PPOCR, ppocr

    workloads = [ppocr(name) for name in PPOCR]
    data = _build(folder / "ppocr", workloads, None)
    return Target("ppocr", data, _feeds(data, workloads))


def _build(folder: Path, workloads: list, sign_key: Path | None) -> bytes:
    from popfuse.fusion import build

    config = {"output_dir": str(folder), "model_fusion": [{"input_model": str(w.path), "name": w.name}
                                                          for w in workloads]}
    return build(config, sign_key=sign_key).popef_path.read_bytes()


def _feeds(data: bytes, workloads: list) -> tuple[dict[str, np.ndarray], ...]:
    runner = Runner(data)
    return tuple(
        {runner.fusion_map.index_anchor: np.array([sub.index], np.uint32),
         **{sub.anchor(name): array for name, array in w.feeds.items()}}
        for sub, w in zip(runner.subgraphs, workloads)
    )


# -- running many, in worker processes ------------------------------------------------------------------------


@dataclass
class Report:
    """Counts of outcomes per family (raw, forged) and target, and the distinct untyped exceptions."""

    counts: dict[str, dict[str, int]] = field(default_factory=lambda: collections.defaultdict(collections.Counter))
    untyped: dict[str, list[str]] = field(default_factory=lambda: collections.defaultdict(list))
    seconds: float = 0.0

    #: Forged mutants that loaded with wrong outputs, by the kind of edit that made them.
    wrong: collections.Counter = field(default_factory=collections.Counter)

    def add(self, target: str, forged: bool, index: int, outcome: Outcome, what: str) -> None:
        self.counts[f"{target} {'forged' if forged else 'raw'}"][outcome.kind] += 1
        if outcome.kind == WRONG:
            self.wrong[_edit_kind(what)] += 1
        if outcome.kind in (UNTYPED, CRASH, HANG, MEMORY):
            examples = self.untyped[f"{outcome.kind}: {outcome.detail}"]
            if len(examples) < 3:
                examples.append(f"{target} {'forged' if forged else 'raw'} #{index}: {what}")

    def to_json(self) -> dict[str, Any]:
        return {"counts": {k: dict(v) for k, v in sorted(self.counts.items())}, "untyped": dict(self.untyped),
                "wrong": dict(self.wrong), "seconds": round(self.seconds, 1)}

    def table(self) -> str:
        kinds = (TYPED, UNTYPED, CRASH, HANG, MEMORY, CORRECT, WRONG)
        lines = [f"{'mutants':<22}{'total':>8}" + "".join(f"{k:>9}" for k in kinds)]
        totals: collections.Counter = collections.Counter()
        for name, counts in sorted(self.counts.items()):
            totals.update(counts)
            lines.append(f"{name:<22}{sum(counts.values()):>8}" + "".join(f"{counts.get(k, 0):>9}" for k in kinds))
        lines.append(f"{'all':<22}{sum(totals.values()):>8}" + "".join(f"{totals.get(k, 0):>9}" for k in kinds))
        if self.wrong:
            lines.append("wrong outputs by edit: " + ", ".join(f"{k} {n}" for k, n in self.wrong.most_common()))
        for problem, examples in self.untyped.items():
            lines += [f"{problem}", *(f"    {e}" for e in examples)]
        return "\n".join(lines)


def _worker(conn, targets: list[Target], seed: int, memory_mb: int) -> None:
    """A worker process: receives (target number, index, forged), answers (outcome, what)."""
    limit = memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    with tempfile.TemporaryDirectory(prefix="popfuse-fuzz-") as tmp:
        folder = Path(tmp)
        references = [reference_outputs(t, folder) for t in targets]
        conn.send("ready")
        while True:
            job = conn.recv()
            if job is None:
                return
            t, index, forged = job
            data, what = mutant(targets[t], index, seed, forged)
            conn.send((open_mutant(data, targets[t], references[t], folder), what))


class _Pool:
    """Worker processes that each open one mutant at a time; a worker that dies or hangs is replaced."""

    def __init__(self, size: int, targets: list[Target], seed: int, memory_mb: int):
        self.context = multiprocessing.get_context("spawn")
        self.args = (targets, seed, memory_mb)
        self.workers = [self._start() for _ in range(size)]

    def _start(self):
        parent, child = self.context.Pipe()
        process = self.context.Process(target=_worker, args=(child, *self.args), daemon=True)
        process.start()
        if parent.poll(600) is False or parent.recv() != "ready":
            raise RuntimeError("a fuzz worker did not start")
        return [process, parent, None, 0.0]

    def run(self, jobs, timeout_s: float, done: Callable[[tuple, Outcome, str], None]) -> None:
        jobs = iter(jobs)
        busy = 0
        for worker in self.workers:
            busy += self._give(worker, jobs)
        while busy:
            for i, worker in enumerate(self.workers):
                process, conn, job, started = worker
                if job is None:
                    continue
                if conn.poll(0.002):
                    try:
                        outcome, what = conn.recv()
                    except (EOFError, OSError):
                        outcome, what = Outcome(CRASH, f"exit {process.exitcode}"), "?"
                        worker = self.workers[i] = self._restart(worker)
                    done(job, outcome, what)
                elif not process.is_alive():
                    done(job, Outcome(CRASH, f"exit {process.exitcode}"), "?")
                    worker = self.workers[i] = self._restart(worker)
                elif time.monotonic() - started > timeout_s:
                    done(job, Outcome(HANG, f"over {timeout_s:.0f} s"), "?")
                    worker = self.workers[i] = self._restart(worker)
                else:
                    continue
                busy -= 1
                worker[2] = None
                busy += self._give(worker, jobs)

    def _give(self, worker, jobs) -> int:
        job = next(jobs, None)
        if job is None:
            return 0
        worker[1].send(job)
        worker[2], worker[3] = job, time.monotonic()
        return 1

    def _restart(self, worker):
        worker[0].kill()
        worker[0].join()
        return self._start()

    def close(self) -> None:
        for process, conn, _, _ in self.workers:
            try:
                conn.send(None)
            except OSError:
                pass
            process.join(5)
            process.kill()


def run(targets: list[Target], shares: Sequence[float], mutants: int, seed: int = 0, workers: int = 2,
        timeout_s: float = 60.0, memory_mb: int = 4096, progress: Callable[[str], None] | None = None) -> Report:
    """Open ``mutants`` mutants, raw and forged in equal numbers, of ``targets`` drawn by ``shares``."""
    report = Report()
    rng = random.Random(seed)
    jobs = [(rng.choices(range(len(targets)), shares)[0], index, index % 2 == 1) for index in range(mutants)]
    start = time.monotonic()
    pool = _Pool(workers, targets, seed, memory_mb)
    finished = 0

    def done(job: tuple, outcome: Outcome, what: str) -> None:
        nonlocal finished
        t, index, forged = job
        if what == "?":
            what = mutant(targets[t], index, seed, forged)[1]
        report.add(targets[t].name, forged, index, outcome, what)
        finished += 1
        if progress and finished % 1000 == 0:
            progress(f"{finished}/{mutants} mutants in {time.monotonic() - start:.0f} s")

    try:
        pool.run(jobs, timeout_s, done)
    finally:
        pool.close()
    report.seconds = time.monotonic() - start
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m popfuse.benchmarks.fuzz``: print the outcome table; exit 1 if any mutant was untyped,
    crashed, hung or blew up, or if a forged mutant of a signed artifact loaded."""
    parser = argparse.ArgumentParser(prog="python -m popfuse.benchmarks.fuzz", description=__doc__.split("\n")[0])
    parser.add_argument("--mutants", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds a mutant may take before it is a hang")
    parser.add_argument("--memory-mb", type=int, default=4096, help="address space of a worker")
    parser.add_argument("--ppocr-share", type=float, default=0.02, help="share of the mutants made of PP-OCR")
    parser.add_argument("--signed-share", type=float, default=0.2, help="share made of the signed small artifact")
    parser.add_argument("--json", type=Path, default=None, help="also write the report here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="popfuse-fuzz-build-") as tmp:
        targets = small_targets(Path(tmp))
        shares = [1 - args.ppocr_share - args.signed_share, args.signed_share]
        if args.ppocr_share > 0:
            targets.append(ppocr_target(Path(tmp)))
            shares.append(args.ppocr_share)
        report = run(targets, shares, args.mutants, args.seed, args.workers, args.timeout, args.memory_mb,
                     progress=lambda line: print(line, file=sys.stderr, flush=True))
    print(report.table())
    print(f"{args.mutants} mutants in {report.seconds:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(report.to_json(), indent=2))
    bad = sum(c.get(k, 0) for c in report.counts.values() for k in (UNTYPED, CRASH, HANG, MEMORY))
    signed_loaded = sum(c.get(CORRECT, 0) + c.get(WRONG, 0) for name, c in report.counts.items()
                        if "signed forged" in name)
    return 1 if bad or signed_loaded else 0


if __name__ == "__main__":
    sys.exit(main())
