"""Namespacing: prefix every value and node name so models that reuse names never collide.

All three PP-OCR models call their input ``x``; PopRT's example reuses ``X``,
``C`` and ``O``. After this pass model i's names all start with ``graph{i}/``,
inside its own ``If``/``Loop`` bodies too.
"""

from __future__ import annotations

import onnx

from ..graph import copy_model, rename_values
from ..pipeline import PassResult


def add_namespace(model: onnx.ModelProto, prefix: str) -> PassResult[None]:
    """Return a copy of ``model`` with ``prefix`` (``naming.namespace(i)``) before every value and node name."""
    out = copy_model(model)
    rename_values(out.graph, lambda name: prefix + name, node_names=lambda name: prefix + name)
    return PassResult(out, True)
