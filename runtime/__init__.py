"""popfuse's runtime: the artifact format, the Runner, the Paddle-style API and the server.

``from popfuse.runtime import RuntimeConfig, Runner, ModelRunner`` is the PopRT-style entry.
"""

if __name__ != "popfuse.runtime":  # imported by the name it had before popfuse installed as one package
    raise ImportError(
        f"popfuse's runtime is imported as popfuse.runtime, not {__name__!r}: write `from popfuse import Runner, "
        "RuntimeConfig`, and `from popfuse import inference as paddle_infer` for the Paddle API"
    )

from .config import RuntimeConfig
from .errors import ArtifactError, BackendError, ExecutionError, OutputError, PopfuseError, SignatureError
from .runner import ExecuteFuture, ModelRunner, Runner, TensorDescriptor

__all__ = [
    "ArtifactError",
    "BackendError",
    "ExecuteFuture",
    "ExecutionError",
    "ModelRunner",
    "OutputError",
    "PopfuseError",
    "Runner",
    "RuntimeConfig",
    "SignatureError",
    "TensorDescriptor",
]
