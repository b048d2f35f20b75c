"""fuse(): namespacing, opsets, control flow, N models, shapes, precision, weight sharing."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from popfuse.fusion import ConfigError, FusionError, ModelOptions, fuse, fuse_models
from popfuse.runtime import Runner, RuntimeConfig
from tests.models import if_model, parse, scale_model

LENIENT = RuntimeConfig(validate_io_params=False)


def test_colliding_names_are_namespaced(make_artifact):
    # Both models name their input X, their weight B, their output O and their nodes alike.
    path = make_artifact([scale_model(2.0), scale_model(10.0)])
    runner = Runner(path, LENIENT)
    x = np.full((1, 4), 1.0, np.float32)
    np.testing.assert_allclose(runner.execute({"graph0/X": x})["graph0/O"], [[2, 3, 4, 5]])
    np.testing.assert_allclose(runner.execute({"graph1/X": x})["graph1/O"], [[10, 11, 12, 13]])


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


def test_single_model_fusion(make_artifact):
    runner = Runner(make_artifact([scale_model(5.0)]), RuntimeConfig())
    np.testing.assert_allclose(runner.execute({"graph0/X": np.zeros((1, 4), np.float32)})["graph0/O"], [[0, 1, 2, 3]])


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


def test_fp16_calibration_given_in_memory():
    zeros = {"X": np.zeros((1, 4), np.float32)}
    fused = fuse_models([scale_model(2.0)], [ModelOptions(name="m", precision="fp16", calibration=zeros)])
    report = fused.models[0].results["precision"].details
    assert report.calibration == "memory" and report.requests == 1
    with pytest.raises(ConfigError, match="model 'm': calibration: expected an .npz path, a mapping"):
        fuse_models([scale_model(2.0)], [ModelOptions(name="m", precision="fp16", calibration=42)])
