"""The packed layout the backend compiles: a few slots whatever N is, read and written by the models directly."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from popfuse.fusion import compile_artifact, fuse_models
from popfuse.fusion.dispatch.tree import cost_aware_splits
from popfuse.fusion.graph import subgraphs
from popfuse.runtime import Runner, RuntimeConfig
from popfuse.runtime.artifact import read_artifact
from tests.models import if_model, multi_output_model, parse, scale_model, slow_model

LENIENT = RuntimeConfig(validate_io_params=False)


def if_output_counts(graph: onnx.GraphProto) -> set[int]:
    counts = set()
    for node in graph.node:
        if node.op_type == "If" and node.name.startswith("dispatch/root"):
            counts.add(len(node.output))
        for sub in subgraphs(node):
            counts |= if_output_counts(sub)
    return counts


def op_types(graph: onnx.GraphProto) -> list[str]:
    return [t for node in graph.node for t in (node.op_type, *(t for sub in subgraphs(node) for t in op_types(sub)))]


@pytest.mark.parametrize("n", [2, 16])
def test_packed_executable_has_the_same_slots_whatever_n(n):
    artifact = compile_artifact(fuse_models([scale_model(float(i)) for i in range(n)]), "onnxruntime-cpu")
    compiled = onnx.load_from_string(bytes(artifact.executable))
    assert [o.name for o in compiled.graph.output] == ["slot/F32/0"]
    assert [i.name for i in compiled.graph.input] == ["index", "slot_in/F32/0"]
    assert if_output_counts(compiled.graph) == {1}
    assert artifact.metadata.slots.outputs == {"F32": ("slot/F32/0",)}
    assert artifact.metadata.slots.inputs == {"F32": ("slot_in/F32/0",)}
    # Nothing but the dispatch and the models: no node packs, cuts or reshapes a request on its way.
    assert not {"Slice", "Reshape", "Concat", "Flatten", "Shape"} & set(op_types(compiled.graph))


def test_mixed_outputs_round_trip(make_artifact):
    path = make_artifact([scale_model(), multi_output_model(), if_model()])
    runner = Runner(path, LENIENT)
    x = np.array([[-1.0, 2.0, -3.0, 4.0]], np.float32)
    out = runner.execute({"graph1/X": x})
    assert list(out) == ["graph1/A", "graph1/S", "graph1/B", "graph1/M", "graph1/K"]
    np.testing.assert_array_equal(out["graph1/A"], np.maximum(x, 0))
    np.testing.assert_array_equal(out["graph1/S"], [2, 2])
    np.testing.assert_array_equal(out["graph1/B"], x.reshape(2, 2))
    assert out["graph1/M"].shape == () and out["graph1/M"] == 4.0
    np.testing.assert_array_equal(out["graph1/K"], [7, 8, 9])
    assert out["graph1/K"].dtype == np.int64
    buffers = {"graph1/B": np.zeros((2, 2), np.float32), "graph1/K": np.zeros(3, np.int64)}
    runner.execute({"graph1/X": x}, buffers)
    np.testing.assert_array_equal(buffers["graph1/K"], [7, 8, 9])
    positive = np.array([[1.0, -2.0, 3.0]], np.float32)  # sums above 0: the model's own If adds 1
    np.testing.assert_array_equal(runner.execute({"graph2/X": positive})["graph2/O"], positive + 1)


def test_inputs_sharing_a_type_travel_in_slots_of_their_own(make_artifact):
    three = parse(
        """
        agraph (float[2] A, float[N, 3] B, int64[2] K) => (float[N, 3] O, int64[2] L)
        {
            s = ReduceSum<keepdims = 0>(A)
            O = Add(B, s)
            L = Neg(K)
        }
        """
    )
    path = make_artifact([scale_model(), three])
    runner = Runner(path, LENIENT)
    assert runner.metadata.slots.inputs == {"F32": ("slot_in/F32/0", "slot_in/F32/1"), "S64": ("slot_in/S64/0",)}
    a = np.array([1.0, 2.0], np.float32)
    b = np.arange(6, dtype=np.float32).reshape(3, 2).T  # not contiguous: fed as it is
    out = runner.execute({"graph1/A": a, "graph1/B": b, "graph1/K": np.array([4, 5], np.int64)})
    np.testing.assert_array_equal(out["graph1/O"], b + 3)
    np.testing.assert_array_equal(out["graph1/L"], [-4, -5])
    np.testing.assert_array_equal(runner.execute({"graph0/X": np.zeros((1, 4), np.float32)})["graph0/O"],
                                  [[0, 1, 2, 3]])


def test_cheap_models_sit_nearer_the_root(make_artifact):
    # PP-OCR's weights, in bytes (det, rec, cls): the classifier, fastest by far, gets an If of the root's own.
    assert cost_aware_splits([4.7e6, 10.6e6, 0.6e6]) == {(0, 2): 1, (1, 3): 2, (0, 3): 2}
    assert cost_aware_splits([1e6] * 5) is None  # equal costs: the balanced tree
    models = [slow_model(2, 128, 4), slow_model(2, 192, 4), scale_model()]
    path = make_artifact(models)
    compiled = onnx.load_from_string(bytes(read_artifact(path).executable))
    root = next(n for n in compiled.graph.node if n.op_type == "If")
    cheap_side = next(a.g for a in root.attribute if a.name == "else_branch")
    assert "If" not in op_types(cheap_side) and "Mul" in op_types(cheap_side)
    runner = Runner(path, LENIENT)
    for i, model in enumerate(models):
        shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
        x = np.random.default_rng(i).standard_normal(shape)
        x = x.astype(np.float32)
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        expected = session.run(None, {"X": x})
        np.testing.assert_allclose(runner.execute({f"graph{i}/X": x})[f"graph{i}/O"], expected[0], rtol=1e-5)


def test_the_fused_model_hands_the_compiler_each_model_graph_under_its_anchors():
    fused = fuse_models([scale_model(), multi_output_model()])
    graphs = fused.graphs
    assert [[i.name for i in g.input] for g in graphs] == [["graph0/X"], ["graph1/X"]]
    assert [o.name for o in graphs[1].output] == ["graph1/A", "graph1/S", "graph1/B", "graph1/M", "graph1/K"]
    assert all(i.type.HasField("tensor_type") for g in graphs for i in g.input)
    assert fused.fusion_map.subgraphs[1].local_name("graph1/K") == "K"
