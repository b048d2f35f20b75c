"""The converter's own steps on ONNX and on a program's JSON, without Paddle (its runs are in test_paddle_models)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from popfuse.runtime.inference.paddle_convert import concat_scalars_as_vectors, float32_interp_scales, rename_io
from tests.models import parse


def test_interp_scales_become_float32_and_nothing_else_changes():
    def op(name, kind):
        return {"#": name, "A": [{"N": "scale", "AT": {"#": "0.a_array", "D": [{"#": kind, "D": 2.0} for _ in "xy"]}},
                                 {"N": "align", "AT": {"#": "0.a_f64", "D": 1.0}}]}

    program = {"program": {"regions": [{"blocks": [{"ops": [
        op("1.nearest_interp", "0.a_f64"), op("1.bilinear_interp", "0.a_f64"), op("1.scale", "0.a_f64"),
        op("1.nearest_interp", "0.a_f32"),
    ]}]}]}}
    assert float32_interp_scales(program) == 4
    ops = program["program"]["regions"][0]["blocks"][0]["ops"]
    kinds = [[e["#"] for e in o["A"][0]["AT"]["D"]] + [o["A"][1]["AT"]["#"]] for o in ops]
    assert kinds == [["0.a_f32", "0.a_f32", "0.a_f64"]] * 2 + [["0.a_f64", "0.a_f64", "0.a_f64"],
                                                               ["0.a_f32", "0.a_f32", "0.a_f64"]]


def test_scalar_shape_values_join_vectors_as_onnx_requires():
    # paddle2onnx's output for a reshape to [batch, 200], the batch a 0-D slice of the shape (PP-OCR cls).
    model = parse(
        """
        agraph (float[N, 200, 1, 1] X) => (float[N, 200] O)
        <int64[1] starts = {0}, int64[1] ends = {1}, int64[1] width = {200}>
        {
            s = Shape(X)
            first = Slice(s, starts, ends)
            batch = Squeeze(first)
            shape = Concat<axis = 0>(batch, width)
            O = Reshape(X, shape)
        }
        """
    )
    with pytest.raises(Exception, match="axis must be in|rank"):
        ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    fixed = concat_scalars_as_vectors(model)
    assert [n.op_type for n in fixed.graph.node].count("Unsqueeze") == 1
    x = np.arange(800, dtype=np.float32).reshape(4, 200, 1, 1)
    (out,) = ort.InferenceSession(fixed.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"X": x})
    np.testing.assert_array_equal(out, x.reshape(4, 200))
    assert concat_scalars_as_vectors(fixed).graph.node == fixed.graph.node  # nothing left to fix


def test_inputs_ordered_and_outputs_renamed_as_paddle_names_them():
    model = parse(
        """
        agraph (float[2] A, float[2] B) => (float[2] fetch_name_0, float[2] fetch_name_1)
        {
            fetch_name_0 = Add(A, B)
            fetch_name_1 = Mul(fetch_name_0, B)
        }
        """
    )
    renamed = rename_io(model, ["B", "A"], ["add_0.tmp_0", "mul_0.tmp_0"])
    assert [i.name for i in renamed.graph.input] == ["B", "A"]
    assert [o.name for o in renamed.graph.output] == ["add_0.tmp_0", "mul_0.tmp_0"]
    assert list(renamed.graph.node[1].input) == ["add_0.tmp_0", "B"]
    onnx.checker.check_model(renamed)
    with pytest.raises(ValueError, match="Paddle's are"):
        rename_io(model, ["A"], ["o0", "o1"])
    with pytest.raises(ValueError, match="2 outputs"):
        rename_io(model, ["A", "B"], ["o0"])
