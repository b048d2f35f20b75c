"""The precision pass: what fp16 keeps in float32 (weights, range, op, error), the measured error, and its report."""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper

from popfuse.fusion import FusionError, ModelOptions
from popfuse.fusion.calibration import Calibration
from popfuse.fusion.graph import copy_model
from popfuse.fusion.passes.precision import (
    PrecisionError,
    PrecisionOptions,
    PrecisionWarning,
    bisect,
    compare,
    convert_precision,
    warn_outside_tolerance,
)
from popfuse.runtime import Runner, RuntimeConfig
from tests.models import parse, scale_model

LENIENT = RuntimeConfig(validate_io_params=False)
FLOAT32_IO = PrecisionOptions(keep_io_types=True)
X = np.linspace(-1, 1, 8, dtype=np.float32)[None]


def run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def plain_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """Every node converted, as onnxconverter-common does alone: the baseline the rules improve on."""
    from onnxconverter_common import float16

    model = copy_model(model)
    for k, node in enumerate(model.graph.node):
        node.name = node.name or f"node{k}"  # the converter names its casts after the nodes
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float16.convert_float_to_float16(model, max_finite_val=65504.0, keep_io_types=True)


def cancelling_model() -> onnx.ModelProto:
    """O = (X * 1.0001 - X) * 1000: float16 rounds 1.0001 to 1, and the subtraction makes that the whole
    answer; every value stays far below the range rule's limit."""
    return parse(
        """
        agraph (float[1, 8] X) => (float[1, 8] O)
        <float w = {1.0001}, float k = {1000.0}>
        {
            a = Mul(X, w)
            b = Sub(a, X)
            O = Mul(b, k)
        }
        """
    )


def test_fp16_subgraph_runs_on_cpu_within_tolerance(make_artifact):
    model = scale_model(0.1, n=8)
    path = make_artifact([model, model], [ModelOptions(precision="fp32"), ModelOptions(precision="fp16")])
    runner = Runner(path, LENIENT)
    x = np.linspace(-3, 3, 8, dtype=np.float32)[None]
    full = runner.execute({"graph0/X": x})["graph0/O"]
    half = runner.execute({"graph1/X": x.astype(np.float16)})["graph1/O"]
    assert half.dtype == np.float16  # PopRT's I/O: an fp16 subgraph takes and returns float16
    np.testing.assert_allclose(half.astype(np.float32), full, atol=1e-2, rtol=1e-3)


def test_fp32_and_fp16_only_models_are_left_alone():
    model = scale_model(2.0)
    assert convert_precision(model, "fp32").model is model
    half_only = parse("agraph (float16[1, 2] X) => (float16[1, 2] O) { O = Relu(X) }")
    result = convert_precision(half_only, "fp16")
    assert result.model is half_only and not result.modified and result.details is None


def test_a_weight_past_float16s_range_keeps_its_node_float32():
    model = scale_model(1e6, n=8)  # the factor is past float16's largest value (65,504)
    result = convert_precision(model, "fp16", FLOAT32_IO)
    report = result.details
    assert report.kept == {"Mul_0": "weights", "Add_1": "range"}  # Add reads the product, ~1e6
    np.testing.assert_allclose(run(result.model, X), run(model, X), rtol=1e-6)
    assert report.within_tolerance and report.error < 1e-6
    # The plain conversion clamps the factor to 65,504.
    assert compare(run(model, X), run(plain_fp16(model), X))[0] > 0.9


def test_float16_outputs_that_overflow_are_reported_and_strict_refuses_them():
    model = scale_model(1e6, n=8)
    report = convert_precision(model, "fp16").details  # float16 I/O: the output itself leaves the range
    assert report.error == float("inf") and not report.within_tolerance
    assert "float16 inputs and outputs" in report.summary()
    with pytest.warns(PrecisionWarning, match=r"model 'scale': fp16 error inf passes the tolerance 1e-02"):
        warn_outside_tolerance(report, "model 'scale'")
    with pytest.raises(PrecisionError, match="the error passes the tolerance. Hint: give representative inputs"):
        convert_precision(model, "fp16", PrecisionOptions(strict=True))


def test_values_past_the_range_limit_keep_the_nodes_that_touch_them():
    model = parse(
        """
        agraph (float[1, 8] X) => (float[1, 8] O)
        <float big = {3000.0}, float small = {0.001}>
        {
            a = Mul(X, big)
            b = Add(a, big)
            O = Mul(b, small)
        }
        """
    )
    result = convert_precision(model, "fp16", FLOAT32_IO)
    assert result.details.kept == {"Mul_0": "range", "Add_1": "range", "Mul_2": "range"}
    want = run(model, X)
    assert np.abs(run(result.model, X) - want).max() < 1e-6 < np.abs(run(plain_fp16(model), X) - want).max()


def test_error_the_model_amplifies_is_found_by_bisection():
    model = cancelling_model()
    result = convert_precision(model, "fp16", FLOAT32_IO)
    report = result.details
    assert report.kept == {"Mul_0": "error"}  # the node that reads 1.0001; the others convert
    assert report.within_tolerance and 0 < report.trials <= 4
    assert f"1 of 3 nodes kept float32 (1 error) after {report.trials} trial conversions" in report.summary()
    want = run(model, X)
    assert compare(want, run(result.model, X))[0] < 1e-2
    assert compare(want, run(plain_fp16(model), X))[0] == 1.0  # every node in float16: the answer is lost


def test_a_value_read_by_several_float32_nodes_stays_float32_between_them():
    # Regression: the converter cast a float32 value to float16 and back before each float32 reader
    # when it had more than one, so a kept region still rounded to float16 at every fan-out.
    model = parse(
        """
        agraph (float[1, 8] X) => (float[1, 8] O)
        <float big = {3000.0}, float one = {1.0}>
        {
            a = Mul(X, big)
            b = Add(a, one)
            c = Sub(a, one)
            O = Add(b, c)
        }
        """
    )
    result = convert_precision(model, "fp16", FLOAT32_IO)
    assert set(result.details.kept.values()) == {"range"} and len(result.details.kept) == 4
    casts = {n.output[0]: n for n in result.model.graph.node if n.op_type == "Cast"}
    round_trips = [n for n in casts.values() if n.input[0] in casts]
    assert not round_trips and len(casts) == 1  # and no cast left that nothing reads: the output's, only
    np.testing.assert_array_equal(run(result.model, X), run(model, X))


def test_a_weight_shared_by_float32_and_float16_nodes_is_given_to_each_in_its_type():
    model = parse(
        """
        agraph (float[1, 8] X) => (float[1, 8] O)
        <float[8] w = {1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0}, float big = {3000.0}, float small = {0.001}>
        {
            a = Mul(X, big)
            r = Add(a, w)
            t = Mul(r, small)
            s = Add(X, w)
            O = Add(t, s)
        }
        """
    )
    result = convert_precision(model, "fp16", FLOAT32_IO)
    assert "Add_4" not in result.details.kept and "Add_3" not in result.details.kept  # these convert
    weights = {t.name: t.data_type for t in result.model.graph.initializer}
    assert weights["w"] == onnx.TensorProto.FLOAT16 and weights["w_fp32"] == onnx.TensorProto.FLOAT
    np.testing.assert_allclose(run(result.model, X), run(model, X), atol=1e-2)


@pytest.mark.parametrize("inferred", [False, True])
def test_constant_nodes_are_weights_like_any_other(inferred):
    # Paddle's fp16 converts models whose weights are Constant nodes (nothing folds them first), and
    # whose values may already carry inferred types (a regression: the constant's float32 type was then
    # declared float16 while its weight stayed float32).
    big = helper.make_node("Constant", [], ["big"], value=numpy_helper.from_array(np.array(1e5, np.float32)))
    graph = helper.make_graph(
        [big, helper.make_node("Mul", ["X", "big"], ["a"]), helper.make_node("Div", ["a", "div"], ["O"])],
        "constants",
        [helper.make_tensor_value_info("X", onnx.TensorProto.FLOAT, [1, 8])],
        [helper.make_tensor_value_info("O", onnx.TensorProto.FLOAT, [1, 8])],
        initializer=[numpy_helper.from_array(np.array(1e5, np.float32), "div")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=10)
    if inferred:
        model = onnx.shape_inference.infer_shapes(model)
    result = convert_precision(model, "fp16", FLOAT32_IO)
    assert result.details.kept == {"Mul_0": "weights", "Div_1": "weights"}
    np.testing.assert_allclose(run(result.model, X), X, rtol=1e-6)  # the constant is not clamped to 65,504


def test_calibration_requests_are_what_is_measured():
    model = cancelling_model()
    # Only zeros: the answer is 0 however 1.0001 rounds, so nothing needs float32 on these inputs.
    zeros = Calibration(({"X": np.zeros((1, 8), np.float32)},), "zeros.npz")
    report = convert_precision(model, "fp16", PrecisionOptions(calibration=zeros, keep_io_types=True)).details
    assert report.kept == {} and report.calibration == "zeros.npz" and report.requests == 1
    wrong = Calibration(({"x": np.zeros((1, 8), np.float32)},), "wrong.npz")
    with pytest.raises(FusionError, match=r"calibration 'wrong.npz': lacks the model's input\(s\) 'X'"):
        convert_precision(model, "fp16", PrecisionOptions(calibration=wrong))


def test_bisect_finds_the_nodes_that_must_stay_and_stops_at_its_budget():
    names = [f"n{k}" for k in range(16)]
    must = {"n3", "n11"}
    tried = []

    def converts(fp32):
        tried.append(fp32)
        return must <= fp32

    bad, untried, trials = bisect(names, converts)
    assert bad == must and not untried and trials == len(tried)
    bad, untried, trials = bisect(names, converts, max_trials=3)
    assert trials == 3 and must <= bad | untried  # what was never tried stays float32


def test_compare_is_relative_l1_and_treats_non_finite_values_as_infinite():
    want = np.array([1.0, -2.0, 3.0, -4.0], np.float32)
    assert compare(want, want + np.float32(0.1)) == pytest.approx((0.04, 0.1), rel=1e-5)
    assert compare(want, np.array([1, -2, np.inf, -4], np.float32)) == (float("inf"), float("inf"))
    assert compare(np.array([1, 2, 3, 4]), np.array([1, 2, 0, 4])) == (0.25, 0.25)  # share of integers that differ
    tiny = np.full(4, 1e-9, np.float32)  # an output at float16's noise floor is judged against 2**-14, not 1e-9
    assert compare(tiny, tiny * 2)[0] < 1e-4
