"""A subgraph served as a model: client names from the fusion map, checks against its specs, warm-up."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from popfuse.fusion import ModelOptions
from popfuse.runtime import Runner, RuntimeConfig
from popfuse.runtime.errors import ExecutionError
from popfuse.runtime.server.errors import BadRequestError
from popfuse.runtime.server.model import SubgraphModel, batchable, check_inputs, warm
from tests.models import PPOCR, dynamic_model, multi_output_model, parse, ppocr_input, scale_model


def test_client_names_are_the_models_own(ppocr_build):
    runner = Runner(ppocr_build.popef_path, RuntimeConfig(validate_io_params=False))
    cls = SubgraphModel("ppocr", runner, 2)
    assert cls.name == "cls" and [s.name for s in cls.inputs] == ["x"]
    assert [s.name for s in cls.outputs] == ["save_infer_model/scale_0.tmp_1"]  # slashes of its own kept
    (out,) = cls.predict({"x": ppocr_input("cls", seed=7)}).values()
    assert out.shape == (1, 2) and list(PPOCR)[2] == "cls"


def test_checks_name_the_model_the_input_and_the_problem(make_artifact):
    path = make_artifact([scale_model(), multi_output_model()], [ModelOptions(name="a"), ModelOptions(name="m")])
    model = SubgraphModel("x", Runner(path, RuntimeConfig(validate_io_params=False)), 1)
    with pytest.raises(BadRequestError, match=r"model 'm', input 'X': expected shape \[1, 4\], received \[1, 5\]"):
        check_inputs(model, {"X": np.ones((1, 5), np.float32)})
    with pytest.raises(BadRequestError, match="model 'm' needs input"):
        check_inputs(model, {})
    assert not batchable(model)


def test_a_dynamic_batch_is_batchable(make_artifact):
    model = SubgraphModel("x", Runner(make_artifact([dynamic_model()]), RuntimeConfig()), 0)
    assert batchable(model)


def test_warm_up_says_in_one_line_when_a_model_rejects_zeros(make_artifact, caplog):
    picky = parse(
        """
        agraph (int64[2] S, float[N] X) => (float[A, B] O)
        {
            O = Reshape(X, S)
        }
        """
    )
    model = SubgraphModel("x", Runner(make_artifact([picky], [ModelOptions(name="picky")]), RuntimeConfig()), 0)
    with caplog.at_level(logging.WARNING):
        assert not warm(model)
    (record,) = caplog.records
    assert "model 'picky' was not warmed" in record.getMessage() and "\n" not in record.getMessage()


def _conv():
    """A 1-D convolution of width 3 over any length: a length of 1 is too short for it."""
    return parse(
        """
        agraph (float[1, 1, N] X) => (float[1, 1, M] O)
        <float[1, 1, 3] W = {1.0, 1.0, 1.0}>
        {
            O = Conv(X, W)
        }
        """
    )


def test_warm_up_finds_a_length_the_model_accepts_and_prints_nothing(make_artifact, capfd, caplog):
    model = SubgraphModel("x", Runner(make_artifact([_conv()], [ModelOptions(name="conv")]), RuntimeConfig()), 0)
    with caplog.at_level(logging.WARNING):
        assert warm(model)
    out, err = capfd.readouterr()
    assert out == "" and err == "" and caplog.text == ""  # onnxruntime's refusal of length 1 is silent


def test_a_refusal_names_the_models_tensors_not_the_artifacts(make_artifact, capfd):
    path = make_artifact([scale_model(), _conv()], [ModelOptions(name="a"), ModelOptions(name="conv")])
    model = SubgraphModel("x", Runner(path, RuntimeConfig(validate_io_params=False)), 1)
    with pytest.raises(ExecutionError) as refused:
        model.predict({"X": np.ones((1, 1, 2), np.float32)})
    message = str(refused.value)
    assert "a Conv operator cannot run on these inputs" in message
    assert "dispatch" not in message and "graph1/" not in message and "Name:'" not in message
    assert capfd.readouterr().err == ""
