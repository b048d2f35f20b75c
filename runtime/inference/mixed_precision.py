"""``convert_to_mixed_precision``: a float32 model written again with float16 weights and compute.

A Paddle inference model is converted by Paddle itself (the paddle extra), so the
result is a Paddle model that Paddle and popfuse both load; an ONNX model is
converted by onnxconverter-common and stays ONNX.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from ..atomic import write_atomic
from .paddle_models import INSTALL_HINT, is_paddle_model
from .tensor import PlaceType, PrecisionType


def convert_to_mixed_precision(model_file: str, params_file: str, mixed_model_file: str, mixed_params_file: str,
                               mixed_precision: PrecisionType, backend: PlaceType, keep_io_types: bool = True,
                               black_list: Iterable[str] = frozenset(), **kwargs: set[str]) -> None:
    """Write ``model_file`` in ``mixed_precision`` to ``mixed_model_file``, as Paddle's function of that name.

    Args:
        model_file, params_file: The float32 model: a Paddle program and its weights, or an ONNX model
            (``params_file`` unused).
        mixed_model_file, mixed_params_file: Where to write the result (an ONNX model needs no params file).
        mixed_precision: ``PrecisionType.Half``.
        backend: Where the model will run. Paddle's converter takes ``PlaceType.GPU`` (it refuses the CPU);
            an ONNX model runs in float16 on the CPU and the GPU alike.
        keep_io_types: Keep the inputs and outputs float32, converting at the model's edges.
        black_list: Operator types left in float32 (Paddle's names for a Paddle model, ONNX's for ONNX).
        kwargs: ``white_list``, operator types to convert (Paddle models only).

    Raises:
        ValueError: a precision other than Half, or what Paddle's converter refuses (Paddle's error type).
        RuntimeError: the model file does not exist, or a Paddle model without the paddle extra.
    """
    if not Path(model_file).is_file():
        raise RuntimeError(f"model file {str(model_file)!r} does not exist")
    if is_paddle_model(model_file):
        try:
            from paddle import inference
        except ImportError:
            raise RuntimeError(f"a Paddle model needs the paddle extra: {INSTALL_HINT}") from None
        inference.convert_to_mixed_precision(
            os.fspath(model_file), os.fspath(params_file), os.fspath(mixed_model_file), os.fspath(mixed_params_file),
            inference.PrecisionType(int(mixed_precision)), inference.PlaceType(int(backend)), keep_io_types,
            set(black_list), **kwargs,
        )
        return
    if PrecisionType(mixed_precision) is not PrecisionType.Half:
        raise ValueError(f"an ONNX model converts to PrecisionType.Half, received {PrecisionType(mixed_precision)!r}")
    if kwargs:
        raise ValueError(f"an ONNX model takes no {', '.join(kwargs)}; leave ops out with black_list")
    import onnx
    from onnxconverter_common import float16

    model = onnx.load(model_file)
    half = np.finfo(np.float16)
    converted = float16.convert_float_to_float16(
        model,
        min_positive_val=float(half.smallest_subnormal),
        max_finite_val=float(half.max),
        keep_io_types=keep_io_types,
        op_block_list=sorted(black_list) or None,
    )
    converted.ir_version = model.ir_version
    onnx.checker.check_model(converted)
    write_atomic(mixed_model_file, converted.SerializeToString())
