"""fuse(): namespacing, opsets, control flow, N models, shapes, precision, weight sharing."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from fusion import IR_VERSION, FusionError, ModelOptions, fuse
from fusion.fuse import fusion_records
from runtime import Runner, RuntimeConfig
from tests.models import dynamic_model, if_model, parse, scale_model

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


def test_colliding_names_are_namespaced(make_artifact):
    # Both models name their input X, their weight B, their output O and their nodes alike.
    path = make_artifact([scale_model(2.0), scale_model(10.0)])
    runner = Runner(path, LENIENT)
    x = np.full((1, 4), 1.0, np.float32)
    np.testing.assert_allclose(runner.execute({"graph0/X": x})["graph0/O"], [[2, 3, 4, 5]])
    np.testing.assert_allclose(runner.execute({"graph1/X": x})["graph1/O"], [[10, 11, 12, 13]])


def test_every_name_inside_nested_graphs_is_prefixed():
    fused = fuse([if_model(), if_model()])
    seen = []

    def walk(graph):
        for node in graph.node:
            seen.extend(n for n in (*node.input, *node.output) if n)
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    walk(attr.g)

    walk(fused.graph)
    model_names = [n for n in seen if not n.startswith(("dispatch/", "index"))]
    assert model_names and all(n.startswith(("graph0/", "graph1/")) for n in model_names)


def test_mixed_opsets_are_harmonised(make_artifact):
    models = [scale_model(2.0, opset=11), scale_model(3.0, opset=13), scale_model(4.0, opset=17)]
    path = make_artifact(models)
    runner = Runner(path, LENIENT)
    assert [s.opset for s in runner.subgraphs] == [11, 13, 17]
    x = np.ones((1, 4), np.float32)
    for i, factor in enumerate([2.0, 3.0, 4.0]):
        np.testing.assert_allclose(runner.execute({f"graph{i}/X": x})[f"graph{i}/O"], factor + np.arange(4)[None])


def test_opset_that_cannot_be_converted_names_the_model_and_op():
    # onnx's converter has no adapter that carries GRU from opset 3 forward.
    old = parse(
        """
        agraph (float[2, 1, 3] X, float[1, 6, 3] W, float[1, 6, 2] R) => (float[2, 1, 1, 2] O)
        {
            O = GRU<hidden_size = 2>(X, W, R)
        }
        """,
        opset=3,
    )
    with pytest.raises(FusionError, match=r"model 'old'.*opset 3 to 15.*op\(s\) GRU cannot be converted"):
        fuse([old, scale_model()], [ModelOptions(name="old"), ModelOptions()])


def test_model_with_its_own_if_keeps_working(make_artifact):
    runner = Runner(make_artifact([scale_model(), if_model()]), LENIENT)
    pos = np.array([[1, 2, 3]], np.float32)
    np.testing.assert_allclose(runner.execute({"graph1/X": pos})["graph1/O"], pos + 1)
    np.testing.assert_allclose(runner.execute({"graph1/X": -pos})["graph1/O"], -pos - 1)


@pytest.mark.parametrize("n", [8, 16])
def test_many_models_each_dispatch_to_their_own_subgraph(make_artifact, n):
    path = make_artifact([scale_model(float(i + 1)) for i in range(n)])
    runner = Runner(path, LENIENT)
    assert len(runner.subgraphs) == n
    x = np.ones((1, 4), np.float32)
    for i in range(n):
        out = runner.execute({"index": np.array([i], np.uint32), f"graph{i}/X": x})
        np.testing.assert_allclose(out[f"graph{i}/O"], (i + 1) + np.arange(4)[None])


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


def test_single_model_fusion(make_artifact):
    runner = Runner(make_artifact([scale_model(5.0)]), RuntimeConfig())
    np.testing.assert_allclose(runner.execute({"graph0/X": np.zeros((1, 4), np.float32)})["graph0/O"], [[0, 1, 2, 3]])


def test_weights_of_one_model_stay_in_its_branch():
    fused = fuse([scale_model(2.0, n=4), scale_model(3.0, n=5)])
    assert not [t.name for t in fused.graph.initializer if t.name.startswith("graph")]


def test_input_shape_fixes_dynamic_dimensions():
    fused = fuse([dynamic_model()], [ModelOptions(input_shape={"X": (8, 4)})])
    anchors, _ = fusion_records(fused)
    shapes = {a.name: a.tensor_info.shape for a in anchors}
    assert shapes["graph0/X"] == (8, 4)
    assert shapes["graph0/O"] == (8, 4)
    unfixed, _ = fusion_records(fuse([dynamic_model()]))
    assert {a.name: a.tensor_info.shape for a in unfixed}["graph0/X"] == (-1, 4)


@pytest.mark.parametrize(
    "shape, match",
    [
        ({"Y": (1, 4)}, "not an input of the model; inputs: X"),
        ({"X": (2, 5)}, "changes dimension 1 from 4 to 5"),
        ({"X": (2, 4, 1)}, "rank 3"),
    ],
)
def test_bad_input_shape_names_the_problem(shape, match):
    with pytest.raises(FusionError, match=rf"model 'dyn'.*{match}"):
        fuse([dynamic_model()], [ModelOptions(name="dyn", input_shape=shape)])


def test_fp16_subgraph_runs_on_cpu_within_tolerance(make_artifact):
    model = scale_model(0.1, n=8)
    path = make_artifact([model, model], [ModelOptions(precision="fp32"), ModelOptions(precision="fp16")])
    runner = Runner(path, LENIENT)
    x = np.linspace(-3, 3, 8, dtype=np.float32)[None]
    full = runner.execute({"graph0/X": x})["graph0/O"]
    half = runner.execute({"graph1/X": x.astype(np.float16)})["graph1/O"]
    assert half.dtype == np.float16
    np.testing.assert_allclose(half.astype(np.float32), full, atol=1e-2, rtol=1e-3)


def test_fused_output_is_deterministic():
    models = [scale_model(2.0), if_model()]
    assert fuse(models).SerializeToString() == fuse(models).SerializeToString()


def test_bad_arguments():
    with pytest.raises(FusionError, match="no models"):
        fuse([])
    with pytest.raises(FusionError, match="2 models but 1 ModelOptions"):
        fuse([scale_model(), scale_model()], [ModelOptions()])
    with pytest.raises(FusionError, match="unique"):
        fuse([scale_model(), scale_model()], [ModelOptions(name="a"), ModelOptions(name="a")])
    with pytest.raises(FusionError, match="expected an onnx.ModelProto"):
        fuse(["model.onnx"])
    broken = scale_model()
    broken.graph.node[0].input[0] = "nothing"
    with pytest.raises(FusionError, match="model 'model0' is not a valid ONNX model"):
        fuse([broken])


def test_outputs_that_cannot_be_anchors_are_refused():
    # An anchor is named by its output: an input passed through, or an output listed twice, has no name of its own.
    twice = parse(
        """
        agraph (float[1, 4] X) => (float[1, 4] R, float[1, 4] S)
        {
            R = Relu(X)
            S = Identity(R)
        }
        """
    )
    echo = onnx.ModelProto()
    echo.CopyFrom(twice)
    twice.graph.output[1].name = "R"
    twice.graph.node.pop()
    with pytest.raises(FusionError, match="model 'model1': output 'R' is listed twice; anchors need distinct names"):
        fuse([scale_model(), twice])
    echo.graph.output[1].name = "X"
    echo.graph.node.pop()
    with pytest.raises(FusionError, match="model 'model0': output 'X' is also an input"):
        fuse([echo])
