"""The public layout: PopRT's interface, valid ONNX that plain onnxruntime runs."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort

from popfuse.fusion import IR_VERSION, fuse
from popfuse.runtime import RuntimeConfig
from tests.models import scale_model

LENIENT = RuntimeConfig(validate_io_params=False)


def test_fused_model_is_valid_onnx_that_onnxruntime_loads():
    fused = fuse([scale_model(2.0), scale_model(3.0)])
    onnx.checker.check_model(fused, full_check=True)
    assert fused.ir_version == IR_VERSION
    session = ort.InferenceSession(fused.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    assert names == ["index", "graph0/X", "graph1/X"]
    out = session.run(["graph1/O"], {"index": np.array([1], np.uint32), "graph1/X": np.ones((1, 4), np.float32)})
    np.testing.assert_allclose(out[0], [[3, 4, 5, 6]])


def test_dispatch_tree_depth_is_logarithmic():
    # ceil(log2 N) levels choose the model, and each model runs in one If of its own.
    def depth(graph):
        inner = [
            depth(attr.g)
            for node in graph.node
            if node.op_type == "If"
            for attr in node.attribute
            if attr.type == onnx.AttributeProto.GRAPH
        ]
        return 1 + max(inner) if inner else 0

    assert depth(fuse([scale_model(float(i)) for i in range(16)]).graph) == 5
    assert depth(fuse([scale_model(float(i)) for i in range(5)]).graph) == 4
    assert depth(fuse([scale_model()]).graph) == 1


def test_weights_of_one_model_stay_in_its_branch():
    fused = fuse([scale_model(2.0, n=4), scale_model(3.0, n=5)])
    assert not [t.name for t in fused.graph.initializer if t.name.startswith("graph")]
