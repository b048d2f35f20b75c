"""Opset harmonisation: every fused model speaks one opset of the default domain.

The branches of an ``If`` share the opset imports of the graph that holds them,
so all models move to one opset: the highest any of them uses, and at least 15,
where ``Optional`` inputs (how a request skips other subgraphs' inputs) begin.
"""

from __future__ import annotations

from collections.abc import Sequence

import onnx
from onnx import version_converter

from ..errors import FusionError
from ..graph import copy_model, walk_nodes
from ..pipeline import PassResult

MIN_OPSET = 15
DEFAULT_DOMAINS = ("", "ai.onnx")


def default_opset(model: onnx.ModelProto) -> int:
    """The model's opset of the default ONNX domain."""
    for entry in model.opset_import:
        if entry.domain in DEFAULT_DOMAINS:
            return entry.version
    raise FusionError("the model imports no opset of the default ONNX domain")


def target_opset(models: Sequence[onnx.ModelProto]) -> int:
    """The opset every model is converted to."""
    return max([MIN_OPSET, *(default_opset(m) for m in models)])


def convert_opset(model: onnx.ModelProto, opset: int) -> PassResult[None]:
    """Convert ``model`` to ``opset`` of the default domain.

    onnx's version converter runs first; where it fails, or drops the model's
    local functions (it does not convert them), onnxscript's converter, which
    inlines them, is tried.

    Raises:
        FusionError: naming the op that neither converter can convert, and what to do.
    """
    have = default_opset(model)
    if have == opset:
        return PassResult(model, False)
    if have > opset:
        raise FusionError(f"cannot lower the model from opset {have} to {opset}")
    try:
        converted = version_converter.convert_version(model, opset)
        if model.functions and len(converted.functions) < len(model.functions):
            raise ValueError("it drops the model's local functions")
    except Exception as e:  # the converter raises bare RuntimeError/IndexError from C++
        converted = _onnxscript_convert(model, opset)
        if converted is None:
            ops = _unconvertible_ops(model, have, opset)
            which = f"op(s) {', '.join(ops)}" if ops else "an op"
            raise FusionError(
                f"cannot convert from opset {have} to {opset}: {which} cannot be converted by onnx's version "
                f"converter ({e}) nor by onnxscript's. Hint: re-export the model at opset {opset}, or fuse it "
                f"only with models of opset {have}"
            ) from e
    converted.ir_version = model.ir_version
    return PassResult(converted, True)


def _onnxscript_convert(model: onnx.ModelProto, opset: int) -> onnx.ModelProto | None:
    """``model`` converted by onnxscript's version converter and checked, or None where it fails."""
    import onnx_ir as ir
    from onnxscript import version_converter as onnxscript_converter

    try:
        converted = ir.from_proto(model)
        onnxscript_converter.convert_version(converted, opset)
        out = ir.to_proto(converted)
        onnx.checker.check_model(out)
    except Exception:  # noqa: BLE001  (any failure: the caller reports both converters')
        return None
    return out if default_opset(out) == opset else None


def _unconvertible_ops(model: onnx.ModelProto, have: int, opset: int) -> list[str]:
    """Op types of the model that the converter fails on, tried one node at a time."""
    failing: list[str] = []
    for node in model.graph.node:
        if node.domain not in DEFAULT_DOMAINS or node.op_type in failing:
            continue
        probe = onnx.helper.make_model(
            onnx.helper.make_graph(
                [node],
                "probe",
                [onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in node.input if n],
                [onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in node.output if n],
            ),
            opset_imports=[onnx.helper.make_opsetid("", have)],
        )
        try:
            version_converter.convert_version(probe, opset)
        except Exception:  # same C++ exceptions as above; we only want to know whether it fails
            failing.append(node.op_type)
    return failing


def used_opsets_only(model: onnx.ModelProto) -> PassResult[None]:
    """``model`` importing only the default domain and the domains its nodes use.

    onnxruntime writes its optimised models importing every domain it knows (nine
    of them); an artifact stores the executable, so the rest is dead weight.
    """
    used = set(DEFAULT_DOMAINS) | {node.domain for node in walk_nodes(model.graph.node)}
    for function in model.functions:
        used.add(function.domain)
        used.update(node.domain for node in walk_nodes(function.node))
    out = copy_model(model)
    del out.opset_import[:]
    out.opset_import.extend(o for o in model.opset_import if o.domain in used)
    return PassResult(out, len(out.opset_import) != len(model.opset_import))
