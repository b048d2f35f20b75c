"""The opset pass: every model moves to one opset of the default domain, or the error names the op."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from popfuse.fusion import FusionError, ModelOptions, fuse
from popfuse.fusion.passes.opset import convert_opset, default_opset, used_opsets_only
from popfuse.runtime import Runner, RuntimeConfig
from tests.models import local_function_model, parse, scale_model

LENIENT = RuntimeConfig(validate_io_params=False)


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


def test_a_model_imports_only_the_domains_its_nodes_use():
    model = scale_model()
    model.opset_import.append(onnx.helper.make_opsetid("com.microsoft", 1))
    result = used_opsets_only(model)
    assert result.modified and [o.domain for o in result.model.opset_import] == [""]
    assert convert_opset(scale_model(opset=13), 13).modified is False
    assert default_opset(convert_opset(scale_model(opset=13), 17).model) == 17


def test_a_model_onnx_cannot_convert_is_converted_by_onnxscript(make_artifact):
    # onnx's converter drops model-local functions (the fused graph then calls an unknown op); onnxscript's
    # converter inlines them. Opset 20 beside opset 22.
    runner = Runner(make_artifact([scale_model(opset=22), local_function_model(20)]), LENIENT)
    assert [s.opset for s in runner.subgraphs] == [22, 20]
    x = np.arange(4, dtype=np.float32)[None]
    np.testing.assert_array_equal(runner.execute({"graph1/X": x})["graph1/O"], 2 * x)
