"""The backend interface: compile a fused ONNX graph for a device, then open it.

A backend is the only place that imports its engine (onnxruntime today; an IPU
backend through Graphcore's SDK could follow), so the container format, the
compiler's passes and the server stay engine-free.

An executable is an ONNX graph that may keep its weights outside itself, as
ONNX external data whose ``location`` names a tensor blob of the artifact. The
runtime hands those weights to ``open`` as arrays over the artifact's bytes.
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
class Weight:
    """A weight the executable keeps outside itself: its name, the location the
    executable gives for it (a tensor blob's name), and its data."""

    name: str
    location: str
    data: np.ndarray


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
    def features(self, device: str) -> str:
        """What an executable compiled here depends on beyond the version (CPU instruction sets …)."""

    @abstractmethod
    def devices(self) -> list[str]:
        """The devices this backend can run on, on this machine."""

    @abstractmethod
    def compile(self, model: bytes, device: str) -> bytes:
        """Optimise a serialized ONNX model for ``device``; returns the optimised ONNX model."""

    def copies_at_load(self, domain: str, op_type: str, input_index: int, rank: int, device: str) -> bool:
        """Whether opening an executable copies this node input, when it is a weight, into
        memory of the engine's own, after which the engine never reads the artifact's bytes
        for it again. The compiler lays such weights out apart from those read in place;
        a wrong answer costs memory, never correctness. By default, none is copied."""
        return False

    @abstractmethod
    def open(
        self,
        executable: bytes | memoryview,
        weights: Sequence[Weight],
        device: str,
        options: SessionOptions,
    ) -> Session:
        """Load an executable this backend compiled, with the weights it keeps outside itself.

        The session may use the weights' memory in place for as long as it lives.
        """
