"""Triton's load generator, ``perf_analyzer``: set up from package registries, and run against a server.

perf_analyzer ships as a binary inside the ``tritonclient`` 2.41.0 wheel (under
``tritonclient-2.41.0.data/data/bin/``, x86-64 Linux). Even on a CPU it loads
``libcudart.so.12``, which the ``nvidia-cuda-runtime-cu12`` wheel has, and
Debian's ``libb64.so.0d`` (package ``libb64-0d``). ``install`` fetches both
wheels with pip and the Debian package with ``apt-get download`` into a cache
folder, takes out those three files, and checks that the binary starts; nothing
is installed system-wide. ``find`` returns the set-up when it is there.

    python -m popfuse.benchmarks.perf_analyzer        # install (or find) it and print where it is
"""

from __future__ import annotations

import csv
import io
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from popfuse.runtime.errors import PopfuseError

TRITONCLIENT = "tritonclient==2.41.0"
CUDA_RUNTIME = "nvidia-cuda-runtime-cu12>=12,<13"
_BINARY = "tritonclient-2.41.0.data/data/bin/perf_analyzer"
_CUDART = "nvidia/cuda_runtime/lib/libcudart.so.12"
_B64 = "libb64.so.0d"


def default_cache() -> Path:
    """Where the set-up lives: ``$POPFUSE_CACHE/perf_analyzer``, or under ``~/.cache/popfuse``."""
    root = os.environ.get("POPFUSE_CACHE") or Path.home() / ".cache" / "popfuse"
    return Path(root) / "perf_analyzer"


class PerfAnalyzerError(PopfuseError):
    """perf_analyzer could not be set up, or a run of it failed."""


@dataclass(frozen=True)
class Measurement:
    """perf_analyzer's figures at one concurrency: client-side throughput and latency, and the server's
    own breakdown of a request's time (from the statistics endpoint)."""

    concurrency: int
    throughput: float  # inferences per second
    p50_us: float
    p99_us: float
    server_queue_us: float
    server_compute_us: float


@dataclass(frozen=True)
class PerfAnalyzer:
    """An installed perf_analyzer: the binary and the folder of the libraries it loads."""

    binary: Path
    libraries: Path

    def run(self, args: Sequence[str], timeout: float) -> subprocess.CompletedProcess:
        """Run perf_analyzer with ``args``; its output is captured."""
        env = {**os.environ, "LD_LIBRARY_PATH": os.pathsep.join(
            p for p in (str(self.libraries), os.environ.get("LD_LIBRARY_PATH", "")) if p)}
        return subprocess.run([str(self.binary), *args], env=env, capture_output=True, text=True, timeout=timeout)

    def measure(self, url: str, protocol: str, model: str, shape: dict[str, Sequence[int]],
                concurrency: Sequence[int], window_ms: int = 2000, trials: int = 5,
                timeout: float = 300) -> list[Measurement]:
        """perf_analyzer's figures for ``model`` at each concurrency, over ``protocol`` (``http`` or ``grpc``),
        sending random binary tensors of ``shape`` (input name → full shape).

        Raises:
            PerfAnalyzerError: perf_analyzer failed; the message has the end of its output.
        """
        results = []
        with tempfile.TemporaryDirectory(prefix="popfuse-perf-") as folder:
            for level in concurrency:
                report = Path(folder) / f"{protocol}-{level}.csv"
                args = ["-m", model, "-u", url, "-i", protocol, "--concurrency-range", f"{level}:{level}",
                        "--input-data", "random", "-p", str(window_ms), "--max-trials", str(trials),
                        # perf_analyzer reports once three windows in a row agree: by default within 10%, which
                        # the shared 2-core machines this runs on rarely hold; here, within a factor of two.
                        "--stability-percentage", "100", "-f", str(report)]
                if protocol == "http":
                    args += ["--input-tensor-format", "binary", "--output-tensor-format", "binary"]
                for name, dims in shape.items():
                    args += ["--shape", f"{name}:{','.join(map(str, dims))}"]
                done = self.run(args, timeout)
                if done.returncode != 0 or not report.exists():
                    tail = (done.stdout + done.stderr).strip()[-1500:]
                    raise PerfAnalyzerError(f"perf_analyzer {' '.join(args)} failed ({done.returncode}): {tail}")
                results += _parse(report.read_text())
        return results


def _parse(text: str) -> list[Measurement]:
    out = []
    for row in csv.DictReader(io.StringIO(text)):
        out.append(Measurement(
            concurrency=int(row["Concurrency"]),
            throughput=float(row["Inferences/Second"]),
            p50_us=float(row["p50 latency"]),
            p99_us=float(row["p99 latency"]),
            server_queue_us=float(row["Server Queue"]),
            server_compute_us=sum(float(row[k]) for k in
                                  ("Server Compute Input", "Server Compute Infer", "Server Compute Output")),
        ))
    return out


def find(cache: Path | None = None) -> PerfAnalyzer | None:
    """The perf_analyzer set up in ``cache`` (default: ``default_cache()``), if it is there and starts."""
    cache = cache or default_cache()
    found = PerfAnalyzer(cache / "bin" / "perf_analyzer", cache / "lib")
    if not found.binary.exists():
        return None
    try:
        done = found.run(["--version"], timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return found if done.returncode == 0 else None


def install(cache: Path | None = None) -> PerfAnalyzer:
    """Set perf_analyzer up in ``cache`` (default: ``default_cache()``) unless it is there already.

    Raises:
        PerfAnalyzerError: not x86-64 Linux, or a download failed; the message says which.
    """
    cache = cache or default_cache()
    found = find(cache)
    if found is not None:
        return found
    if sys.platform != "linux" or platform.machine() != "x86_64":
        raise PerfAnalyzerError(f"perf_analyzer ships for x86-64 Linux only, this is {sys.platform} "
                                f"{platform.machine()}")
    (cache / "bin").mkdir(parents=True, exist_ok=True)
    (cache / "lib").mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="popfuse-perf-setup-") as tmp:
        work = Path(tmp)
        _extract(_wheel(TRITONCLIENT, "manylinux1_x86_64", work), _BINARY, cache / "bin" / "perf_analyzer")
        (cache / "bin" / "perf_analyzer").chmod(0o755)
        _extract(_wheel(CUDA_RUNTIME, "manylinux2014_x86_64", work), _CUDART, cache / "lib" / "libcudart.so.12")
        _libb64(work, cache / "lib" / _B64)
    found = find(cache)
    if found is None:
        done = PerfAnalyzer(cache / "bin" / "perf_analyzer", cache / "lib").run(["--version"], timeout=30)
        raise PerfAnalyzerError(f"perf_analyzer was set up in {cache} but does not start: "
                                f"{(done.stdout + done.stderr).strip()[-800:]}")
    return found


def _wheel(requirement: str, platform_tag: str, folder: Path) -> Path:
    before = set(folder.glob("*.whl"))
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
               "--platform", platform_tag, "--dest", str(folder), requirement]
    done = subprocess.run(command, capture_output=True, text=True)
    new = set(folder.glob("*.whl")) - before
    if done.returncode != 0 or not new:
        raise PerfAnalyzerError(f"pip could not download {requirement}: {done.stderr.strip()[-800:]}")
    return new.pop()


def _extract(wheel: Path, member: str, target: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        try:
            with archive.open(member) as source, open(target, "wb") as out:
                shutil.copyfileobj(source, out)
        except KeyError:
            raise PerfAnalyzerError(f"{wheel.name} has no {member}") from None


def _libb64(work: Path, target: Path) -> None:
    """Debian's libb64.so.0d, from ``apt-get download libb64-0d`` (no root needed once apt's lists exist)."""
    def download() -> subprocess.CompletedProcess:
        return subprocess.run(["apt-get", "download", "libb64-0d"], cwd=work, capture_output=True, text=True)

    try:
        done = download()
        if done.returncode != 0 and os.geteuid() == 0:  # no package lists yet: fetch them, as root may
            subprocess.run(["apt-get", "update", "-qq"], capture_output=True)
            done = download()
    except FileNotFoundError:
        raise PerfAnalyzerError("perf_analyzer needs Debian's libb64-0d, and apt-get is not here") from None
    debs = list(work.glob("libb64-0d_*.deb"))
    if done.returncode != 0 or not debs:
        raise PerfAnalyzerError(f"apt-get download libb64-0d failed: {done.stderr.strip()[-800:]}; "
                                "run apt-get update first")
    unpacked = work / "libb64"
    subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(unpacked)], check=True, capture_output=True)
    library = next(unpacked.rglob(_B64), None)
    if library is None:
        raise PerfAnalyzerError(f"{debs[0].name} has no {_B64}")
    shutil.copyfile(library.resolve(), target)


def main() -> int:
    """Entry point of ``python -m popfuse.benchmarks.perf_analyzer``."""
    try:
        found = install()
    except PerfAnalyzerError as e:
        print(f"perf_analyzer: error: {e}", file=sys.stderr)
        return 1
    print(found.binary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
