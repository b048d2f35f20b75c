"""What checking an artifact's integrity costs when it opens: ``python -m popfuse.benchmarks.integrity``.

Builds the PP-OCR fusion (det, rec, cls), then, alternating in one process, times ``Runner(path)`` from the
file to a loaded session, and the check as the reader makes it with SHA-256 (since format 2) and with CRC-32
(what format 1 checked instead): the records' and the executable's digests, then their decoding, while the
weights' digests run on another thread, as ``read_artifact`` does. The figure that matters is how much longer a
load takes than it would with CRC-32: (SHA-256 - CRC-32) / (load - SHA-256 + CRC-32). With ``--sign``, the
artifact is signed and loaded with its key trusted, so the Ed25519 check is inside the load time too.
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path


def measure(rounds: int = 15, sign: bool = False) -> dict[str, float]:
    """Median seconds of a load, of SHA-256 and of CRC-32 over the PP-OCR artifact's blobs."""
    from popfuse.benchmarks.models import PPOCR, ppocr_path
    from popfuse.fusion import build
    from popfuse.runtime import Runner, RuntimeConfig
    from popfuse.runtime.popef import read_blobs

    with tempfile.TemporaryDirectory(prefix="popfuse-integrity-") as tmp:
        folder = Path(tmp)
        key, trusted = _keys(folder) if sign else (None, ())
        config = {"output_dir": str(folder), "model_fusion": [{"input_model": str(ppocr_path(n)), "name": n}
                                                              for n in PPOCR]}
        path = build(config, sign_key=key).popef_path
        size = path.stat().st_size
        blobs = read_blobs(path)
        loads, sha, crc = [], [], []
        Runner(path, RuntimeConfig(trusted_keys=trusted))  # page cache and onnxruntime warmed once
        for _ in range(rounds):
            start = time.perf_counter()
            Runner(path, RuntimeConfig(trusted_keys=trusted))
            loads.append(time.perf_counter() - start)
            sha.append(_check(blobs, path.name, _sha256))
            crc.append(_check(blobs, path.name, _crc32))
    load, sha_s, crc_s = (statistics.median(v) for v in (loads, sha, crc))
    return {"bytes": size, "load_s": load, "sha256_s": sha_s, "crc32_s": crc_s,
            "added": (sha_s - crc_s) / (load - sha_s + crc_s)}


def _sha256(name: bytes, payload: memoryview) -> None:
    digest = hashlib.sha256(name)
    digest.update(payload)
    digest.digest()


def _crc32(name: bytes, payload: memoryview) -> None:
    zlib.crc32(payload, zlib.crc32(name))


def _check(blobs: list, label: str, digest: Callable[[bytes, memoryview], None]) -> float:
    """Seconds the reader's checks take with ``digest``: the weights' on a thread, the rest and the records'
    decoding on this one, as ``read_artifact`` runs them."""
    from popfuse.runtime.artifact import parse_blobs
    from popfuse.runtime.popef import BlobType

    start = time.perf_counter()
    weights = [b for b in blobs if b.type == BlobType.TENSOR]
    thread = threading.Thread(target=lambda: [digest(b.name.encode(), b.payload) for b in weights])
    thread.start()
    for blob in blobs:
        if blob.type != BlobType.TENSOR:
            digest(blob.name.encode(), blob.payload)
    parse_blobs(blobs, label)
    thread.join()
    return time.perf_counter() - start


def _keys(folder: Path) -> tuple[Path, list[bytes]]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    key = ed25519.Ed25519PrivateKey.generate()
    path = folder / "key.pem"
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return path, [public]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m popfuse.benchmarks.integrity", description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--sign", action="store_true", help="sign the artifact and trust its key")
    args = parser.parse_args(argv)
    r = measure(args.rounds, args.sign)
    print(f"PP-OCR artifact {r['bytes'] / 1e6:.2f} MB{' (signed, key trusted)' if args.sign else ''}: "
          f"load {r['load_s'] * 1e3:.1f} ms, the checks with SHA-256 {r['sha256_s'] * 1e3:.2f} ms, with CRC-32 "
          f"{r['crc32_s'] * 1e3:.2f} ms;"
          f" SHA-256 instead of CRC-32 adds {r['added'] * 100:.1f}% to the load")
    return 0


if __name__ == "__main__":
    sys.exit(main())
