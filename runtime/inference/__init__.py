"""Paddle Inference's Python API on popfuse: ``from popfuse import inference as paddle_infer``.

Paddle 3.3's ``paddle.inference`` names that apply to onnxruntime, each acting on
it or a documented no-op (docs/inference.md's table covers every name), and the
older names ``AnalysisConfig`` and ``create_paddle_predictor``.
"""

import importlib.metadata

from ..backends import DEFAULT_TARGET, resolve_target
from .config import Config
from .mixed_precision import convert_to_mixed_precision
from .predictor import Predictor, PredictorPool, create_predictor
from .tensor import DataType, PlaceType, PrecisionType, Tensor, get_num_bytes_of_data_type

AnalysisConfig = Config
create_paddle_predictor = create_predictor


def get_version() -> str:
    """popfuse's version and its engine's, in Paddle's ``key: value`` lines."""
    backend, _ = resolve_target(DEFAULT_TARGET)
    return f"version: {importlib.metadata.version('popfuse')}\nbackend: {backend.name} {backend.version()}\n"


def get_trt_compile_version() -> tuple[int, int, int]:
    """``(0, 0, 0)``, as Paddle built without TensorRT: popfuse has no TensorRT target."""
    return (0, 0, 0)


def get_trt_runtime_version() -> tuple[int, int, int]:
    """``(0, 0, 0)``, as Paddle built without TensorRT."""
    return (0, 0, 0)


def enable_static() -> None:
    """``paddle.enable_static()``: programs here are always static graphs."""


__all__ = [
    "AnalysisConfig", "Config", "DataType", "PlaceType", "PrecisionType", "Predictor", "PredictorPool", "Tensor",
    "convert_to_mixed_precision", "create_paddle_predictor", "create_predictor", "enable_static",
    "get_num_bytes_of_data_type", "get_trt_compile_version", "get_trt_runtime_version", "get_version",
]
