"""What every suite is given: where to work, how many threads, and how big to go."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Context:
    """Settings shared by the suites.

    Attributes:
        workdir: Scratch folder for models and artifacts.
        threads: Intra-op threads for every session, fused or not.
        smoke: Tiny sizes and few repetitions: checks the suite runs, not how fast.
    """

    workdir: Path
    threads: int = 1
    smoke: bool = False

    def __post_init__(self) -> None:
        # The runs' executable cache, for this process and the probes it starts: a benchmark starts from none,
        # and never fills or reads the user's own.
        os.environ["POPFUSE_CACHE_DIR"] = str(self.workdir / "executable-cache")

    def newest_cache_entry(self) -> Path:
        """The executable cache entry made last: the one a suite's first load of an artifact just made."""
        return max((self.workdir / "executable-cache").glob("*.ort"), key=lambda p: p.stat().st_mtime_ns)

    def scale(self, full: int, smoke: int) -> int:
        """``full`` repetitions normally, ``smoke`` in a smoke run."""
        return smoke if self.smoke else full
