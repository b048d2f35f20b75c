"""Paddle Inference's Python API on popfuse: ``from popfuse import inference as paddle_infer``.

``Config``, ``create_predictor``, ``Predictor``, ``Tensor``, ``DataType``, and
the older names ``AnalysisConfig`` and ``create_paddle_predictor``.
"""

from .config import Config
from .predictor import Predictor, create_predictor
from .tensor import DataType, Tensor

AnalysisConfig = Config
create_paddle_predictor = create_predictor


def enable_static() -> None:
    """``paddle.enable_static()``: programs here are always static graphs."""

__all__ = [
    "AnalysisConfig", "Config", "DataType", "Predictor", "Tensor", "create_paddle_predictor", "create_predictor",
    "enable_static",
]
