"""Removing useless scale ops: ``Mul``/``Div`` by 1, ``Add``/``Sub`` of 0, and ``Identity``.

Exporters leave these behind (Paddle's ``scale`` with scale 1 and bias 0 is the
classic case); each costs a kernel launch and a copy for nothing. A node whose
output is a graph output stays, so the graph's interface never changes.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from ..graph import mapping_renamer, rename_values
from ..pipeline import PassResult

_NEUTRAL = {"Mul": 1.0, "Div": 1.0, "Add": 0.0, "Sub": 0.0}


def remove_useless_scale_ops(model: onnx.ModelProto) -> PassResult[int]:
    """Return the model without neutral scale ops; details: how many were removed."""
    # Shapes tell whether a constant could broadcast the data to a larger shape.
    out = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    graph = out.graph
    constants = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].type == onnx.AttributeProto.TENSOR:
            constants[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    outputs = {o.name for o in graph.output}
    shapes = {v.name: v for v in (*graph.input, *graph.value_info, *graph.output)}
    renames: dict[str, str] = {}
    keep = []
    for node in graph.node:
        source = _passthrough(node, constants, shapes)
        if source is None or node.output[0] in outputs:
            keep.append(node)
        else:
            renames[node.output[0]] = renames.get(source, source)
    removed = len(graph.node) - len(keep)
    if removed:
        del graph.node[:]
        graph.node.extend(keep)
        # Follow chains: a -> Identity -> b -> Mul(1) -> c maps c to a.
        resolved = {k: _follow(k, renames) for k in renames}
        rename_values(graph, mapping_renamer(resolved))
        used = {name for node in graph.node for name in node.input} | outputs
        unused = [k for k, t in enumerate(graph.initializer) if t.name not in used]
        for k in reversed(unused):  # constants only the removed nodes read
            del graph.initializer[k]
    return PassResult(out, removed > 0, removed)


def _passthrough(node: onnx.NodeProto, constants: dict, shapes: dict) -> str | None:
    """The input a neutral node passes through unchanged, or None."""
    if node.op_type == "Identity" and not node.domain:
        return node.input[0]
    neutral = _NEUTRAL.get(node.op_type)
    if neutral is None or node.domain or len(node.input) != 2:
        return None
    data, const = node.input
    value = constants.get(const)
    if value is None:
        return None
    if value.size and np.all(value == neutral) and value.ndim <= _rank(shapes.get(data)):
        return data  # broadcasting the constant cannot change the data's shape
    return None


def _rank(info: onnx.ValueInfoProto | None) -> int:
    if info is None or not info.type.tensor_type.HasField("shape"):
        return 0
    return len(info.type.tensor_type.shape.dim)


def _follow(name: str, renames: dict[str, str]) -> str:
    seen = set()
    while name in renames and name not in seen:
        seen.add(name)
        name = renames[name]
    return name
