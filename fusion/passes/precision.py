"""Precision conversion: ``fp16`` turns float32 weights, activations and I/O into float16.

Nodes whose float inputs must stay float32 (``Resize`` scales, ``Range`` …) keep
float32 behind Cast nodes; onnxconverter-common knows that list. On a CPU
target, onnxruntime runs float16 nodes without a float16 kernel in float32,
so an fp16 subgraph runs everywhere.
"""

from __future__ import annotations

import logging
import warnings

import onnx

from ..pipeline import PassResult

log = logging.getLogger(__name__)

# float16's own limits; onnxconverter-common's defaults (1e-7, 1e4) would clamp
# ordinary weights, and 10 000 is far from float16's real maximum.
_FP16_MIN_POSITIVE = 5.96e-08
_FP16_MAX = 65504.0


def convert_precision(model: onnx.ModelProto, precision: str) -> PassResult[int]:
    """Return ``model`` in ``precision`` (``fp32`` leaves it as it is); details: how many weight values
    outside float16's range were clamped to it."""
    if precision == "fp32" or not _has_float32(model.graph):
        return PassResult(model, False, 0)
    from onnxconverter_common import float16

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        converted = float16.convert_float_to_float16(
            model,
            min_positive_val=_FP16_MIN_POSITIVE,
            max_finite_val=_FP16_MAX,
            keep_io_types=False,
            check_fp16_ready=False,  # mixed fp16/fp32 models are converted, fp16-only ones skipped above
        )
    clamped = sum("truncated" in str(w.message) for w in caught)
    if clamped:
        log.info("fp16: %d weight values outside float16's range were clamped to it", clamped)
    converted.ir_version = model.ir_version
    return PassResult(converted, True, clamped)


def _has_float32(graph: onnx.GraphProto) -> bool:
    """Whether any input, output, weight or constant of ``graph`` is float32."""
    if any(v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT for v in (*graph.input, *graph.output)):
        return True
    if any(t.data_type == onnx.TensorProto.FLOAT for t in graph.initializer):
        return True
    return any(
        a.t.data_type == onnx.TensorProto.FLOAT
        for n in graph.node
        for a in n.attribute
        if a.type == onnx.AttributeProto.TENSOR
    )
