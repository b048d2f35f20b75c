"""Fix dynamic input dimensions (``input_shape``), and infer the shapes that follow."""

from __future__ import annotations

from collections.abc import Mapping

import onnx

from ..errors import FusionError
from ..rename import subgraphs


def drop_negative_dims(model: onnx.ModelProto) -> onnx.ModelProto:
    """Turn dimensions declared as negative numbers into dynamic ones.

    Some exporters write ``dim_value: -1`` for "any size", which ONNX does not
    allow; onnxruntime keeps such a shape and warns on every run that the real
    size differs from it.
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    _drop_negative(out.graph)
    return out


def _drop_negative(graph: onnx.GraphProto) -> None:
    for info in (*graph.input, *graph.output, *graph.value_info):
        for d in info.type.tensor_type.shape.dim:
            if d.HasField("dim_value") and d.dim_value < 0:
                d.Clear()
    for node in graph.node:
        for sub in subgraphs(node):
            _drop_negative(sub)


def fix_input_shapes(model: onnx.ModelProto, shapes: Mapping[str, tuple[int, ...]]) -> onnx.ModelProto:
    """Set the named inputs' shapes.

    Rules: every name must be a graph input (not an initializer); the rank must
    match; a dimension already fixed in the model may not change.

    Raises:
        FusionError: naming the input, the expected and the received shape.
    """
    if not shapes:
        return model
    out = onnx.ModelProto()
    out.CopyFrom(model)
    initializers = {t.name for t in out.graph.initializer}
    inputs = {i.name: i for i in out.graph.input if i.name not in initializers}
    for name, shape in shapes.items():
        if name not in inputs:
            raise FusionError(
                f"input_shape names {name!r}, which is not an input of the model; inputs: {', '.join(inputs)}"
            )
        dims = inputs[name].type.tensor_type.shape.dim
        current = [d.dim_value if d.HasField("dim_value") else None for d in dims]
        shown = [c if c is not None else "?" for c in current]
        if len(dims) != len(shape):
            raise FusionError(
                f"input_shape for {name!r} has rank {len(shape)} ({list(shape)}), the model's input has rank "
                f"{len(dims)} ({shown})"
            )
        for axis, (have, want) in enumerate(zip(current, shape)):
            if have is not None and have != want:
                raise FusionError(
                    f"input_shape for {name!r} changes dimension {axis} from {have} to {want}; only dynamic "
                    f"dimensions can be set (model shape {shown})"
                )
        for d, want in zip(dims, shape):
            d.Clear()
            d.dim_value = want
    return out


def infer_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    """onnx shape inference with data propagation, so fixed inputs reach the outputs."""
    return onnx.shape_inference.infer_shapes(model, check_type=False, strict_mode=False, data_prop=True)
