"""What checking an artifact's integrity costs when it opens: ``python -m popfuse.benchmarks.integrity``.

Builds the PP-OCR fusion (det, rec, cls), then, alternating in one process, times ``Runner(path)`` from the
file to a loaded session, SHA-256 over every blob's name and payload (what the reader checks since format
2), and CRC-32 over the same bytes (what format 1 checked instead). The figure that matters is how much longer a
load takes than it would with CRC-32: (SHA-256 - CRC-32) / (load - SHA-256 + CRC-32). With ``--sign``, the
artifact is signed and loaded with its key trusted, so the Ed25519 check is inside the load time too.
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import tempfile
import time
import zlib
from collections.abc import Sequence
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
        bodies = [(b.name.encode(), b.payload) for b in read_blobs(path)]
        loads, sha, crc = [], [], []
        Runner(path, RuntimeConfig(trusted_keys=trusted))  # page cache and onnxruntime warmed once
        for _ in range(rounds):
            start = time.perf_counter()
            Runner(path, RuntimeConfig(trusted_keys=trusted))
            loads.append(time.perf_counter() - start)
            start = time.perf_counter()
            for name, payload in bodies:
                digest = hashlib.sha256(name)
                digest.update(payload)
                digest.digest()
            sha.append(time.perf_counter() - start)
            start = time.perf_counter()
            for name, payload in bodies:
                zlib.crc32(payload, zlib.crc32(name))
            crc.append(time.perf_counter() - start)
    load, sha_s, crc_s = (statistics.median(v) for v in (loads, sha, crc))
    return {"bytes": size, "load_s": load, "sha256_s": sha_s, "crc32_s": crc_s,
            "added": (sha_s - crc_s) / (load - sha_s + crc_s)}


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
          f"load {r['load_s'] * 1e3:.1f} ms, SHA-256 {r['sha256_s'] * 1e3:.2f} ms, CRC-32 {r['crc32_s'] * 1e3:.2f} ms;"
          f" SHA-256 instead of CRC-32 adds {r['added'] * 100:.1f}% to the load")
    return 0


if __name__ == "__main__":
    sys.exit(main())
