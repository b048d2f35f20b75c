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
from typing import Literal, Protocol

import numpy as np


@dataclass
class EngineLogs:
    """Whether engines print their own log lines. Off by default: every error an engine reports also reaches
    the caller as an exception, so its log lines only repeat it (in red, on stderr)."""

    shown: bool = False


#: The process's setting; engines log per process, so it is one for all of them.
ENGINE_LOGS = EngineLogs()


@dataclass(frozen=True)
class Port:
    """An input or output of an opened model: its name, NumPy dtype (None: not a tensor popfuse carries)
    and shape (-1: set at run time)."""

    name: str
    dtype: np.dtype | None
    shape: tuple[int, ...]


class Session(Protocol):
    """What a runner, a predictor or a server needs of an opened model.

    ``run`` raises ExecutionError when the engine refuses the request's inputs
    (the caller's to fix) and BackendError when the engine fails otherwise.
    """

    inputs: tuple[Port, ...]
    outputs: tuple[Port, ...]

    def run(
        self, output_names: Sequence[str], feeds: Mapping[str, np.ndarray], shrink_memory: bool = False
    ) -> list[np.ndarray]:
        """The named outputs for ``feeds``; ``shrink_memory`` returns the engine's free memory after the run."""
        ...


@dataclass(frozen=True)
class Weight:
    """A weight the executable keeps outside itself: its name, the location and offset the
    executable gives for it (a tensor blob's name, the byte it starts at there), and its data."""

    name: str
    location: str
    data: np.ndarray
    offset: int = 0


@dataclass(frozen=True)
class SessionOptions:
    """How to open a model. None means the backend's default.

    Attributes:
        intra_op_num_threads: Threads one run may use.
        optimize: Optimise the graph when opening it: a plain model (the Paddle API's) may want it. An
            executable is completed by the backend instead (``executable``).
        optimization_level: How far ``optimize`` goes: ``basic`` (semantics-preserving rewrites),
            ``extended`` (fusions too) or ``all`` (layout rewrites too).
        optimized_model_path: Where to write the graph as optimised (Paddle's ir_debug).
        disabled_optimizers: Optimisations by name to leave out (Paddle's custom patterns set to false).
        custom_op_libraries: Shared libraries that implement custom ops.
        memory_limit_bytes: Bound on the engine's memory arena (Paddle's ipu_available_memory_proportion).
        device_id: Which device of the target's kind.
        log_severity_level: The least severe engine message logged: 0 verbose, 1 info, 2 warning, 3 error.
        cache_dir: A folder where the backend may keep what it opens in a form it opens faster, in less
            memory; None keeps nothing. Entries are named by ``cache_key`` and the backend's version and machine.
        cache_key: Names the model's content (an artifact's ``content_id``); None keeps nothing.
        profile_prefix: Write a per-operator profile of the session's runs to ``<prefix>_<time>.json``
            when the session closes.
        executable: The model is an artifact's executable, compiled to hold on every machine of its kind: the
            backend completes it for this one (onnxruntime: the layout for the CPU's vector width), and keeps
            the result in ``cache_dir``.
    """

    intra_op_num_threads: int | None = None
    optimize: bool = False
    optimization_level: Literal["basic", "extended", "all"] = "all"
    optimized_model_path: str | None = None
    disabled_optimizers: tuple[str, ...] = ()
    custom_op_libraries: tuple[str, ...] = ()
    memory_limit_bytes: int | None = None
    device_id: int = 0
    log_severity_level: int | None = None
    profile_prefix: str | None = None
    cache_dir: str | None = None
    cache_key: str | None = None
    executable: bool = False


class Backend(ABC):
    """Compiles fused graphs and opens the executables it compiled."""

    name: str

    @abstractmethod
    def version(self) -> str:
        """The engine version; an executable is only guaranteed to open under the same one."""

    @abstractmethod
    def features(self, device: str) -> str:
        """What an executable compiled here depends on beyond the version (device, architecture …)."""

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
        model: bytes | memoryview,
        weights: Sequence[Weight],
        device: str,
        options: SessionOptions,
    ) -> Session:
        """Load a model: an executable this backend compiled, with the weights it keeps outside
        itself, or a plain ONNX model (no weights outside it).

        The session may use the weights' memory in place for as long as it lives.

        Raises:
            BackendError: the engine cannot load the model here.
        """
