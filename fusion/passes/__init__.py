"""Graph passes: each module is one transformation, ModelProto in, ModelProto out.

Passes copy their input and never edit it, so a failing pass leaves nothing
half-edited. ``run_pass`` names the pass and the model in any error.
"""

from __future__ import annotations

from collections.abc import Callable

import onnx

from ..errors import FusionError

Pass = Callable[[onnx.ModelProto], onnx.ModelProto]


def run_pass(name: str, model_name: str, fn: Pass, model: onnx.ModelProto) -> onnx.ModelProto:
    """Run one pass, adding the pass and model to any error it raises."""
    try:
        return fn(model)
    except FusionError as e:
        raise type(e)(f"model {model_name!r}: {e}") from e
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError, ValueError, RuntimeError) as e:
        raise FusionError(f"model {model_name!r}: pass {name!r} failed: {e}") from e
