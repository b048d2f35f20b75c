"""Deterministic node names in a compiled graph.

onnxruntime names the nodes its optimisers add after their operator,
``ReorderOutput`` for the first and ``ReorderOutput_token_<n>`` after it, with
``n`` from a counter whose value, and the node that gets the bare name, differ
from one session to the next: two builds of the same models wrote different
executables. Every name popfuse keeps has a ``/`` in it (the namespace
``graph{i}/``, or a dispatch name), so the names without one are the
optimiser's; this pass numbers them again, ``<op>_token_<k>``, in the order the
nodes stand, nested graphs included. The same graph then gives the same bytes.
Node names carry no meaning for running the graph.
"""

from __future__ import annotations

import re

import onnx

from ..graph import copy_model, walk_nodes
from ..pipeline import PassResult

_GENERATED = re.compile(r"^([^/]+?)(_token_\d+)?$")


def canonical_node_names(model: onnx.ModelProto) -> PassResult[int]:
    """Renumber the optimiser's node names in graph order; details: how many were renamed."""
    out = copy_model(model)
    renamed = 0
    for node in walk_nodes(out.graph.node):
        generated = _GENERATED.match(node.name)
        if generated:
            node.name = f"{generated.group(1)}_token_{renamed}"
            renamed += 1
    return PassResult(out, renamed > 0, renamed)
