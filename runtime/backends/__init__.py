"""Targets and the backends that serve them.

A target names a backend and a device, ``<backend>-<device>``. Each backend is
imported only when a target of its is resolved, so that naming a backend does
not import its engine. An IPU backend, through Graphcore's Poplar SDK, would
take a row of its own; the SDK is on no public registry, so none ships.
"""

from __future__ import annotations

from collections.abc import Callable

from ..errors import BackendError
from .base import ENGINE_LOGS, Backend, Port, Session, SessionOptions, Weight

DEFAULT_TARGET = "onnxruntime-cpu"


def _onnxruntime() -> Backend:
    from .onnxruntime import OnnxRuntimeBackend

    return OnnxRuntimeBackend()


# target → (the backend's loader, device)
_TARGETS: dict[str, tuple[Callable[[], Backend], str]] = {
    "onnxruntime-cpu": (_onnxruntime, "cpu"),
    "onnxruntime-cuda": (_onnxruntime, "cuda"),
}

_IPU_HINT = (
    "The IPU needs Graphcore's Poplar SDK (popart, poprt), which is not on the public package "
    "registries and is not bundled with popfuse"
)


def show_engine_logs(shown: bool) -> None:
    """Show the engines' own log lines (warnings and errors), or hide them (the default)."""
    ENGINE_LOGS.shown = shown


def targets() -> list[str]:
    """Every target this popfuse knows, available here or not."""
    return sorted(_TARGETS)


def resolve_target(target: str) -> tuple[Backend, str]:
    """The backend instance and device for ``target``.

    Raises:
        BackendError: the target is unknown, or names the IPU.
    """
    if target not in _TARGETS:
        hint = f"{_IPU_HINT}. " if "ipu" in target.lower() else ""
        raise BackendError(f"unknown target {target!r}. {hint}Valid targets: {', '.join(targets())}")
    load, device = _TARGETS[target]
    return load(), device


__all__ = [
    "DEFAULT_TARGET", "Backend", "Port", "Session", "SessionOptions", "Weight", "resolve_target", "show_engine_logs",
    "targets",
]
