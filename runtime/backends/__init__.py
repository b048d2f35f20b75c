"""Targets and the backends that serve them.

A target names a backend and a device, ``<backend>-<device>``. The registry is a
plain table, imported lazily so that naming a backend does not import its engine.
"""

from __future__ import annotations

import importlib

from ..errors import BackendError
from .base import Backend, Session, SessionOptions, Weight

DEFAULT_TARGET = "onnxruntime-cpu"

# target → (module, class, device)
_TARGETS: dict[str, tuple[str, str, str]] = {
    "onnxruntime-cpu": ("runtime.backends.onnxruntime", "OnnxRuntimeBackend", "cpu"),
    "onnxruntime-cuda": ("runtime.backends.onnxruntime", "OnnxRuntimeBackend", "cuda"),
}

_IPU_HINT = (
    "The IPU needs Graphcore's Poplar SDK (popart, poprt), which is not on the public package "
    "registries and is not bundled with popfuse"
)


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
    module, cls, device = _TARGETS[target]
    return getattr(importlib.import_module(module), cls)(), device


__all__ = ["DEFAULT_TARGET", "Backend", "Session", "SessionOptions", "Weight", "resolve_target", "targets"]
