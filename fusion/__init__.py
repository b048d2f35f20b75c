"""popfuse's compiler: fuse ONNX models into one graph and compile it into an artifact.

``fuse(models, options) -> onnx.ModelProto`` is the pure core; ``fuse_models``
gives the typed ``FusedModel`` that ``compile_artifact`` takes; ``build(config)``
runs a whole YAML build.
"""

if __name__ != "popfuse.fusion":  # imported by the name it had before popfuse installed as one package
    raise ImportError(
        f"popfuse's compiler is imported as popfuse.fusion, not {__name__!r}: write `from popfuse import build, fuse` "
        "or `from popfuse import fusion`"
    )

from .compiler import BuildResult, build, compile_artifact
from .config import FusionConfig, ModelOptions, ModelSpec, load_config, parse_config
from .errors import ConfigError, FusionError
from .fuse import FusedModel, fuse, fuse_models
from .graph import IR_VERSION
from .passes.precision import PrecisionError, PrecisionWarning
from .pipeline import PassError, PassResult

__all__ = [
    "IR_VERSION",
    "BuildResult",
    "ConfigError",
    "FusedModel",
    "FusionConfig",
    "FusionError",
    "ModelOptions",
    "ModelSpec",
    "PassError",
    "PassResult",
    "PrecisionError",
    "PrecisionWarning",
    "build",
    "compile_artifact",
    "fuse",
    "fuse_models",
    "load_config",
    "parse_config",
]
