"""Fix dynamic input dimensions (``input_shape``), and infer the shapes that follow."""

from __future__ import annotations

import re
from collections.abc import Mapping

import onnx

from popfuse.runtime.display import show_shape

from ..errors import FusionError
from ..graph import copy_model, graph_inputs, subgraphs, walk_nodes
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
    inputs = {i.name: i for i in graph_inputs(model.graph)}
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
    out = _set_shapes(model, shapes)
    _check_shapes_fit(model, out, shapes)
    return PassResult(out, True)


def _check_shapes_fit(model: onnx.ModelProto, fixed: onnx.ModelProto, shapes: Mapping[str, tuple[int, ...]]) -> None:
    """Refuse shapes that a node of the model cannot take, now rather than when the backend compiles the fused
    graph: a shape can change what a branch of the model's own ``If`` computes (a ``Squeeze`` that drops a
    dimension of size 1 …), which ONNX infers only once the shape is known.

    Only a failure that the shapes cause is reported: strict inference must pass on the model as it was.
    """
    problem = _strict_inference_error(fixed)
    if problem is None or _strict_inference_error(model) is not None:
        return
    culprits = [name for name in shapes if len(shapes) == 1 or _strict_inference_error(
        _set_shapes(model, {name: shapes[name]})) is not None] or list(shapes)
    nodes = _NODE.findall(problem)
    op_type, node = nodes[-1] if nodes else ("?", "?")
    inside = " inside " + ", ".join(f"{t} {n!r}" for t, n in nodes[:-1]) if len(nodes) > 1 else ""
    reason = problem.rsplit("] ", 1)[-1].strip()
    given = ", ".join(f"{n}={','.join(map(str, shapes[n]))}" for n in culprits)
    raise FusionError(
        f"input_shape {given}: node {node!r} ({op_type}){inside} cannot take it: {reason}. Hint: the model "
        f"computes something else from {', '.join(map(repr, culprits))} at this shape; give the shape the model "
        "expects (see its documentation or exporter), or leave the input dynamic"
    )


def _set_shapes(model: onnx.ModelProto, shapes: Mapping[str, tuple[int, ...]]) -> onnx.ModelProto:
    """A copy of ``model`` with the named inputs set to ``shapes`` (checked by ``fix_input_shapes``)."""
    out = copy_model(model)
    for info in graph_inputs(out.graph):
        if info.name in shapes:
            for d, want in zip(info.type.tensor_type.shape.dim, shapes[info.name]):
                d.Clear()
                d.dim_value = want
    return out


def _strict_inference_error(model: onnx.ModelProto) -> str | None:
    """onnx's strict shape inference's complaint about ``model``, or None. Each nested graph gets a copy of
    the constants it reads from enclosing graphs, as onnxruntime infers with them and onnx does not."""
    probe = copy_model(model)
    _copy_outer_constants(probe.graph, {})
    try:
        onnx.shape_inference.infer_shapes(probe, check_type=True, strict_mode=True, data_prop=True)
    except onnx.shape_inference.InferenceError as e:
        return str(e)
    return None


def _copy_outer_constants(graph: onnx.GraphProto, outer: dict[str, onnx.TensorProto]) -> None:
    constants = {**outer, **{t.name: t for t in graph.initializer}}
    for node in graph.node:
        value = next((a.t for a in node.attribute if a.name == "value" and a.HasField("t")), None)
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx") and value is not None:
            tensor = constants[node.output[0]] = onnx.TensorProto()
            tensor.CopyFrom(value)
            tensor.name = node.output[0]
    for node in graph.node:
        for sub in subgraphs(node):
            own = {t.name for t in sub.initializer} | {i.name for i in sub.input}
            own |= {name for n in sub.node for name in n.output}
            read = {name for n in walk_nodes(sub.node) for name in n.input}
            sub.initializer.extend(constants[name] for name in sorted(read - own) if name in constants)
            _copy_outer_constants(sub, constants)


# How onnx's inference names a node in its errors: "(op_type:LSTM, node name: lstm)".
_NODE = re.compile(r"\(op_type:(\w+), node name: ([^)]*)\)")


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
