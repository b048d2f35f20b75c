"""convert_to_mixed_precision on ONNX models (Paddle models: test_paddle.py)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from popfuse.runtime import inference as paddle_infer
from tests.models import ppocr_input, ppocr_path


def convert(tmp_path, **kwargs) -> onnx.ModelProto:
    out = tmp_path / "mixed.onnx"
    paddle_infer.convert_to_mixed_precision(str(ppocr_path("cls")), "", str(out), "", paddle_infer.PrecisionType.Half,
                                            paddle_infer.PlaceType.CPU, **kwargs)
    return onnx.load(out)


def test_a_real_model_in_float16_keeps_float32_io_and_its_answers(tmp_path):
    model = convert(tmp_path)
    assert [v.type.tensor_type.elem_type for v in (*model.graph.input, *model.graph.output)] == [1, 1]
    constants = [a.t for n in model.graph.node if n.op_type == "Constant" for a in n.attribute if a.name == "value"]
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in constants)
    x = ppocr_input("cls")
    (half,) = paddle_infer.create_predictor(paddle_infer.Config(str(tmp_path / "mixed.onnx"))).run([x])
    (full,) = paddle_infer.create_predictor(paddle_infer.Config(str(ppocr_path("cls")))).run([x])
    np.testing.assert_allclose(half, full, atol=2e-3)
    assert half.argmax() == full.argmax()


def test_float16_io_and_operators_left_in_float32(tmp_path):
    model = convert(tmp_path, keep_io_types=False, black_list={"Softmax"})
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
    softmax = next(n for n in model.graph.node if n.op_type == "Softmax")
    # a float32 Softmax between Casts
    producers = {o: n.op_type for n in model.graph.node for o in n.output}
    assert producers[softmax.input[0]] == "Cast"


def test_what_it_refuses(tmp_path):
    with pytest.raises(ValueError, match="Half"):
        paddle_infer.convert_to_mixed_precision(str(ppocr_path("cls")), "", str(tmp_path / "m.onnx"), "",
                                                paddle_infer.PrecisionType.Bfloat16, paddle_infer.PlaceType.CPU)
    with pytest.raises(RuntimeError, match="does not exist"):
        paddle_infer.convert_to_mixed_precision(str(tmp_path / "absent.onnx"), "", str(tmp_path / "m.onnx"), "",
                                                paddle_infer.PrecisionType.Half, paddle_infer.PlaceType.CPU)
    assert not (tmp_path / "m.onnx").exists()
