"""Namespacing: prefix every value and node name so models that reuse names never collide.

All three PP-OCR models call their input ``x``; PopRT's example reuses ``X``,
``C`` and ``O``. After this pass model i's names all start with ``graph{i}/``,
inside its own ``If``/``Loop`` bodies too.
"""

from __future__ import annotations

import onnx

from ..rename import rename_values


def prefix_for(index: int) -> str:
    """The namespace of subgraph ``index``; public I/O names are ``graph{i}/<original>``."""
    return f"graph{index}/"


def add_namespace(model: onnx.ModelProto, prefix: str) -> onnx.ModelProto:
    """Return a copy of ``model`` with ``prefix`` before every value and node name."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    add = lambda name: prefix + name  # noqa: E731
    rename_values(out.graph, add, node_names=add)
    return out
