"""Fix dynamic input dimensions (``input_shape``), and infer the shapes that follow."""

from __future__ import annotations

from collections.abc import Mapping

import onnx

from popfuse.runtime.display import show_shape

from ..errors import FusionError
from ..graph import copy_model, graph_inputs, subgraphs
from ..pipeline import PassResult


def drop_negative_dims(model: onnx.ModelProto) -> PassResult[None]:
    """Turn dimensions declared as negative numbers into dynamic ones.

    Some exporters write ``dim_value: -1`` for "any size", which ONNX does not
    allow; onnxruntime keeps such a shape and warns on every run that the real
    size differs from it.
    """
    out = copy_model(model)
    return PassResult(out, _drop_negative(out.graph) > 0)


def _drop_negative(graph: onnx.GraphProto) -> int:
    dropped = 0
    for info in (*graph.input, *graph.output, *graph.value_info):
        for d in info.type.tensor_type.shape.dim:
            if d.HasField("dim_value") and d.dim_value < 0:
                d.Clear()
                dropped += 1
    for node in graph.node:
        for sub in subgraphs(node):
            dropped += _drop_negative(sub)
    return dropped


def fix_input_shapes(model: onnx.ModelProto, shapes: Mapping[str, tuple[int, ...]]) -> PassResult[None]:
    """Set the named inputs' shapes.

    Rules: every name must be a graph input (not an initializer); the rank must
    match; a dimension already fixed in the model may not change.

    Raises:
        FusionError: naming the input, the expected and the received shape.
    """
    if not shapes:
        return PassResult(model, False)
    out = copy_model(model)
    inputs = {i.name: i for i in graph_inputs(out.graph)}
    for name, shape in shapes.items():
        if name not in inputs:
            raise FusionError(
                f"input_shape names {name!r}, which is not an input of the model; inputs: {', '.join(inputs)}"
            )
        dims = inputs[name].type.tensor_type.shape.dim
        current = [d.dim_value if d.HasField("dim_value") else -1 for d in dims]
        shown = show_shape(current)
        if len(dims) != len(shape):
            raise FusionError(
                f"input_shape for {name!r} has rank {len(shape)} ({list(shape)}), the model's input has rank "
                f"{len(dims)} ({shown})"
            )
        for axis, (have, want) in enumerate(zip(current, shape)):
            if have >= 0 and have != want:
                raise FusionError(
                    f"input_shape for {name!r} changes dimension {axis} from {have} to {want}; only dynamic "
                    f"dimensions can be set (model shape {shown})"
                )
        for d, want in zip(dims, shape):
            d.Clear()
            d.dim_value = want
    return PassResult(out, True)


def infer_shapes(model: onnx.ModelProto) -> PassResult[None]:
    """onnx shape inference with data propagation, so fixed inputs reach the outputs."""
    inferred = onnx.shape_inference.infer_shapes(model, check_type=False, strict_mode=False, data_prop=True)
    return PassResult(inferred, True)


def drop_initializer_inputs(model: onnx.ModelProto) -> PassResult[None]:
    """List as graph inputs only the values a caller feeds.

    Models of IR version < 4 list every initializer as a graph input too; a
    fused model's inputs are its anchors, which a request feeds.
    """
    fed = graph_inputs(model.graph)
    if len(fed) == len(model.graph.input):
        return PassResult(model, False)
    out = copy_model(model)
    del out.graph.input[:]
    out.graph.input.extend(fed)
    return PassResult(out, True)


def set_batch_size(model: onnx.ModelProto, size: int) -> PassResult[None]:
    """Fix the dynamic first (batch) dimension of every fed input to ``size``, as an IPU micro batch does."""
    out = copy_model(model)
    changed = False
    for info in graph_inputs(out.graph):
        dims = info.type.tensor_type.shape.dim
        if dims and not (dims[0].HasField("dim_value") and dims[0].dim_value > 0):
            dims[0].Clear()
            dims[0].dim_value = size
            changed = True
    return PassResult(out, changed) if changed else PassResult(model, False)
