"""The shape passes: input_shape fixes dynamic dimensions, checked; negative dims and initializer inputs."""

from __future__ import annotations

import onnx
import pytest

from popfuse.fusion import ModelOptions, PassError, fuse, fuse_models
from popfuse.fusion.passes.shapes import drop_initializer_inputs, drop_negative_dims, set_batch_size
from tests.models import dynamic_model, lstm_in_if_model, ppocr_path, scale_model


def test_input_shape_fixes_dynamic_dimensions():
    fused = fuse_models([dynamic_model()], [ModelOptions(input_shape={"X": (8, 4)})])
    shapes = {a.name: a.tensor_info.shape for a in fused.anchors}
    assert shapes["graph0/X"] == (8, 4)
    assert shapes["graph0/O"] == (8, 4)
    unfixed = fuse_models([dynamic_model()]).anchors
    assert {a.name: a.tensor_info.shape for a in unfixed}["graph0/X"] == (-1, 4)


@pytest.mark.parametrize(
    "shape, match",
    [
        ({"Y": (1, 4)}, "not an input of the model; inputs: X"),
        ({"X": (2, 5)}, "changes dimension 1 from 4 to 5"),
        ({"X": (2, 4, 1)}, "rank 3"),
    ],
)
def test_bad_input_shape_names_the_model_the_pass_and_the_problem(shape, match):
    with pytest.raises(PassError, match=rf"model 'dyn': pass 'input_shape' .*{match}") as caught:
        fuse([dynamic_model()], [ModelOptions(name="dyn", input_shape=shape)])
    assert caught.value.pass_name == "input_shape" and caught.value.before == ("negative_dims", "initializer_inputs")


def test_negative_dimensions_become_dynamic():
    model = dynamic_model()
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = -1
    result = drop_negative_dims(model)
    assert result.modified
    assert not result.model.graph.input[0].type.tensor_type.shape.dim[0].HasField("dim_value")
    assert drop_negative_dims(dynamic_model()).modified is False


def test_initializers_listed_as_inputs_leave_the_interface():
    model = scale_model()
    model.graph.input.append(onnx.helper.make_tensor_value_info("B", onnx.TensorProto.FLOAT, [4]))
    assert [i.name for i in drop_initializer_inputs(model).model.graph.input] == ["X"]
    assert drop_initializer_inputs(scale_model()).modified is False


def test_batch_size_fixes_only_a_dynamic_first_dimension():
    fixed = set_batch_size(dynamic_model(), 4)
    assert fixed.modified and fixed.model.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 4
    assert set_batch_size(scale_model(), 4).modified is False


def test_input_shape_on_a_real_model_reaches_its_output():
    fused = fuse_models([onnx.load(ppocr_path("det"))], [ModelOptions(input_shape={"x": (1, 3, 64, 96)})])
    shapes = {a.name: a.tensor_info.shape for a in fused.anchors}
    assert shapes["graph0/x"] == (1, 3, 64, 96)
    assert shapes[fused.fusion_map.subgraphs[0].outputs[0]] == (1, 1, 64, 96)


def test_an_input_shape_a_node_of_an_if_branch_cannot_take_is_refused_at_once_naming_both():
    with pytest.raises(PassError, match=r"model 'vad': pass 'input_shape' .*input_shape X=1,64: node 'lstm' \(LSTM\) "
                                        r"inside If 'rate' cannot take it: First input tensor must have rank 3\. Hint"):
        fuse([lstm_in_if_model()], [ModelOptions(name="vad", input_shape={"X": (1, 64)})])
    fused = fuse_models([lstm_in_if_model()], [ModelOptions(name="vad", input_shape={"X": (1, 128)})])
    assert {a.name: a.tensor_info.shape for a in fused.anchors}["graph0/X"] == (1, 128)
