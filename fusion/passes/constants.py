"""Constant folding, bounded by ``max_tensor_size``; ``Constant`` nodes become initializers.

Real exporters (paddle2onnx among them) keep weights as ``Constant`` nodes.
Turning them into initializers lets the fusion store identical weights once.

An ``If`` whose condition folds to a constant is kept, not replaced by the
branch taken: onnx-graphsurgeon's flattening pairs the branch's outputs with
the ``If``'s wrongly once it has renamed the branch's values, and leaves nodes
reading values nothing produces (ONNX's function-expanded AffineGrid, whose
branches read their own outputs, is one such model).
"""

from __future__ import annotations

import logging

import onnx
import onnx_graphsurgeon as gs

from ..pipeline import PassResult

log = logging.getLogger(__name__)


def fold_constants(model: onnx.ModelProto, max_tensor_size: int = -1) -> PassResult[None]:
    """Fold constant subexpressions, creating no tensor over ``max_tensor_size`` bytes (-1: no bound)."""
    graph = gs.import_onnx(model)
    # graphsurgeon logs each node it cannot fold at warning level; those are expected
    # (ops of other domains, shape-dependent nodes) and are not the user's problem.
    gs_logger = gs.logger.G_LOGGER
    severity, gs_logger.severity = gs_logger.severity, gs_logger.ERROR
    try:
        graph.fold_constants(
            size_threshold=None if max_tensor_size < 0 else max_tensor_size, flatten_subgraphs=False
        )
    finally:
        gs_logger.severity = severity
    graph.cleanup(remove_unused_graph_inputs=False).toposort()
    folded = gs.export_onnx(graph, do_type_check=False)
    folded.ir_version = model.ir_version
    folded.producer_name, folded.producer_version = model.producer_name, model.producer_version
    del folded.opset_import[:]
    folded.opset_import.extend(model.opset_import)
    del folded.functions[:]
    folded.functions.extend(model.functions)
    return PassResult(folded, len(folded.graph.node) != len(model.graph.node))
