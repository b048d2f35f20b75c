"""The pass contract and the pipeline: one result type, and a failure that names the pass."""

from __future__ import annotations

import onnx
import pytest

from popfuse.fusion import FusionError, PassError, PassResult
from popfuse.fusion.config import ModelOptions
from popfuse.fusion.fuse import model_passes
from popfuse.fusion.passes.shapes import drop_negative_dims, infer_shapes
from popfuse.fusion.pipeline import Pass, final_model, run_passes
from tests.models import dynamic_model, scale_model


def test_passes_run_in_order_each_on_the_last_ones_model():
    model = scale_model()
    results = run_passes([Pass("negative_dims", drop_negative_dims), Pass("infer_shapes", infer_shapes)], model, "m")
    assert list(results) == ["negative_dims", "infer_shapes"]
    assert all(isinstance(r, PassResult) for r in results.values())
    assert results["negative_dims"].modified is False and results["negative_dims"].model is not model
    assert final_model(results) is results["infer_shapes"].model
    assert model == scale_model()  # the input is never edited


def test_a_failing_pass_is_named_with_the_subject_and_the_passes_before_it():
    def refuse(model: onnx.ModelProto) -> PassResult[None]:
        raise FusionError("no such thing")

    passes = [Pass("negative_dims", drop_negative_dims), Pass("refuse", refuse), Pass("infer_shapes", infer_shapes)]
    with pytest.raises(PassError, match=r"^model 'x': pass 'refuse' \(after negative_dims\): no such thing$") as e:
        run_passes(passes, scale_model(), "model 'x'")
    assert (e.value.pass_name, e.value.subject, e.value.before) == ("refuse", "model 'x'", ("negative_dims",))
    assert isinstance(e.value.__cause__, FusionError)


def test_an_error_from_inside_onnx_becomes_a_pass_error_chained_to_it():
    def check(model: onnx.ModelProto) -> PassResult[None]:
        onnx.checker.check_model(model)
        return PassResult(model, False)

    broken = scale_model()
    broken.graph.node[0].input[0] = "nothing"
    with pytest.raises(PassError, match="pass 'check'") as e:
        run_passes([Pass("check", check)], broken, "model 'b'")
    assert isinstance(e.value.__cause__, onnx.checker.ValidationError)


def test_each_model_runs_the_same_named_passes_ending_with_its_namespace():
    names = [p.name for p in model_passes(ModelOptions(), index=3, opset=17)]
    assert names == ["negative_dims", "initializer_inputs", "input_shape", "fold_constants", "precision", "opset",
                     "infer_shapes", "namespace"]
    results = run_passes(model_passes(ModelOptions(input_shape={"X": (2, 4)}), 3, 17), dynamic_model(), "m")
    assert [i.name for i in final_model(results).graph.input] == ["graph3/X"]
    assert results["input_shape"].modified and results["opset"].modified
