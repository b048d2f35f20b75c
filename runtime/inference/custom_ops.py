"""Custom ops: Paddle's ``[paddle op, IPU op, domain, version]`` mapped onto onnxruntime.

A node whose type is the Paddle op becomes the named op in the named domain.
The default ONNX domain needs nothing more; any other domain is served by
onnxruntime-extensions, whose library holds the ops registered with its
``@onnx_op`` decorator (domain ``ai.onnx.contrib``).
"""

from __future__ import annotations

from collections.abc import Sequence

import onnx

_DEFAULT = ("", "ai.onnx")


def map_custom_ops(model: onnx.ModelProto, ops: Sequence[Sequence]) -> onnx.ModelProto:
    """Rewrite the nodes of each ``[paddle op, target op, domain, version]``; returns a new model."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for paddle_op, target, domain, version in ops:
        domain = "" if domain in _DEFAULT else str(domain)
        for node in out.graph.node:
            if node.op_type == paddle_op:
                node.op_type, node.domain = str(target), domain
        if domain and all(o.domain != domain for o in out.opset_import):
            out.opset_import.append(onnx.helper.make_opsetid(domain, int(version)))
    return out


def custom_op_libraries(ops: Sequence[Sequence]) -> tuple[str, ...]:
    """The libraries that implement the custom domains of ``ops``, for ``SessionOptions.custom_op_libraries``.

    Raises:
        RuntimeError: a custom domain is asked for and onnxruntime-extensions is not installed.
    """
    domains = sorted({str(domain) for _, _, domain, _ in ops if domain not in _DEFAULT})
    if not domains:
        return ()
    try:
        from onnxruntime_extensions import get_library_path
    except ImportError:
        raise RuntimeError(
            f"custom ops in domain(s) {', '.join(domains)} need onnxruntime-extensions; "
            "install it with `pip install popfuse[extensions]`"
        ) from None
    return (get_library_path(),)
