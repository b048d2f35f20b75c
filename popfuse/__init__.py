"""popfuse: fuse many ONNX models into one artifact, then run and serve it without ever reloading.

    import popfuse

    result = popfuse.build("config.yaml")           # or popfuse.fuse([model_a, model_b]) -> onnx.ModelProto
    runner = popfuse.Runner(result.popef_path, popfuse.RuntimeConfig(validate_io_params=False))
    outputs = runner.execute({"graph1/X": x})

``popfuse.fusion`` is the compiler, ``popfuse.runtime`` the runtime and server,
and ``from popfuse import inference as paddle_infer`` Paddle Inference's API.
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# The public names, by the module that defines them. They load on first use, so that `popfuse --help` and
# `popfuse dump` import no engine (onnx, onnxruntime) they do not need.
_API = {
    **dict.fromkeys(
        ("build", "fuse", "fuse_models", "compile_artifact", "FusedModel", "ModelOptions", "BuildResult",
         "FusionError", "ConfigError", "PassError", "PrecisionError", "PrecisionWarning"),
        "popfuse.fusion",
    ),
    **dict.fromkeys(
        ("Runner", "ModelRunner", "RuntimeConfig", "TensorDescriptor", "PopfuseError", "ArtifactError",
         "BackendError", "ExecutionError", "OutputError", "SignatureError"),
        "popfuse.runtime",
    ),
    "run_check": "popfuse.check",
}
_MODULES = {"inference": "popfuse.runtime.inference"}

__all__ = [
    "ArtifactError", "BackendError", "BuildResult", "ConfigError", "ExecutionError", "FusedModel", "FusionError",
    "ModelOptions", "ModelRunner", "OutputError", "PassError", "PopfuseError", "PrecisionError", "PrecisionWarning",
    "Runner", "RuntimeConfig", "SignatureError", "TensorDescriptor", "build", "compile_artifact", "fuse", "fuse_models",
    "inference", "run_check",
]

if TYPE_CHECKING:  # what the lazy names are, for type checkers and IDEs
    from popfuse.check import run_check
    from popfuse.fusion import (
        BuildResult,
        ConfigError,
        FusedModel,
        FusionError,
        ModelOptions,
        PassError,
        PrecisionError,
        PrecisionWarning,
        build,
        compile_artifact,
        fuse,
        fuse_models,
    )
    from popfuse.runtime import (
        ArtifactError,
        BackendError,
        ExecutionError,
        ModelRunner,
        OutputError,
        PopfuseError,
        Runner,
        RuntimeConfig,
        SignatureError,
        TensorDescriptor,
        inference,
    )


def __getattr__(name: str) -> Any:
    if name in _API:
        value = getattr(import_module(_API[name]), name)
    elif name in _MODULES:
        value = import_module(_MODULES[name])
    else:
        raise AttributeError(f"module 'popfuse' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
