"""What every suite is given: where to work, how many threads, and how big to go."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
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

    @contextlib.contextmanager
    def own_cache(self, name: str) -> Iterator[Path]:
        """An executable cache of its own for the probes started inside: their first load makes its entry,
        though an earlier suite loaded the same artifact (a build of the same models writes the same bytes,
        and the entry is named by them: the cold start's first start found the dispatch suite's)."""
        folder = self.workdir / "executable-caches" / name
        previous = os.environ["POPFUSE_CACHE_DIR"]
        os.environ["POPFUSE_CACHE_DIR"] = str(folder)
        try:
            yield folder
        finally:
            os.environ["POPFUSE_CACHE_DIR"] = previous

    def scale(self, full: int, smoke: int) -> int:
        """``full`` repetitions normally, ``smoke`` in a smoke run."""
        return smoke if self.smoke else full
