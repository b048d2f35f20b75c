"""The backend interface: compile a fused ONNX graph for a device, then open it.

A backend is the only place that imports its engine (onnxruntime today; an IPU
backend through Graphcore's SDK could follow), so the container format, the
compiler's passes and the server stay engine-free.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np


class Session(Protocol):
    """What a runner needs of an opened executable."""

    def run(self, output_names: Sequence[str], feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]: ...


@dataclass(frozen=True)
class SessionOptions:
    """How to open an executable. None means the backend's default."""

    intra_op_num_threads: int | None = None


class Backend(ABC):
    """Compiles fused graphs and opens the executables it compiled."""

    name: str
    #: Exceptions the engine raises from ``Session.run``; a runner turns them into ExecutionError.
    run_errors: tuple[type[BaseException], ...] = ()

    @abstractmethod
    def version(self) -> str:
        """The engine version; an executable is only guaranteed to open under the same one."""

    @abstractmethod
    def devices(self) -> list[str]:
        """The devices this backend can run on, on this machine."""

    @abstractmethod
    def compile(self, model: bytes, device: str) -> bytes:
        """Optimise a serialized ONNX model for ``device`` and return the executable's bytes."""

    @abstractmethod
    def open(self, executable: bytes | memoryview, device: str, options: SessionOptions) -> Session:
        """Load an executable this backend compiled, ready to run."""
