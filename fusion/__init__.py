"""popfuse's compiler: fuse ONNX models into one graph and compile it into an artifact.

``fusion.fuse(models, options) -> onnx.ModelProto`` is the pure core;
``fusion.build(config_or_path)`` runs a whole YAML build.
"""

from .compiler import BuildResult, build, compile_artifact
from .config import FusionConfig, ModelOptions, ModelSpec, load_config, parse_config
from .errors import ConfigError, FusionError
from .fuse import IR_VERSION, fuse

__all__ = [
    "IR_VERSION",
    "BuildResult",
    "ConfigError",
    "FusionConfig",
    "FusionError",
    "ModelOptions",
    "ModelSpec",
    "build",
    "compile_artifact",
    "fuse",
    "load_config",
    "parse_config",
]
