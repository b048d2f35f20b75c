"""popfuse's runtime: the artifact format, the Runner and the serving side.

``from runtime import RuntimeConfig, Runner, ModelRunner`` is the PopRT-style entry.
"""

from .check import run_check
from .config import RuntimeConfig
from .errors import ArtifactError, BackendError, ExecutionError, PopfuseError
from .runner import ExecuteFuture, ModelRunner, Runner, TensorDescriptor

__all__ = [
    "ArtifactError",
    "BackendError",
    "ExecuteFuture",
    "ExecutionError",
    "ModelRunner",
    "PopfuseError",
    "Runner",
    "RuntimeConfig",
    "TensorDescriptor",
    "run_check",
]
