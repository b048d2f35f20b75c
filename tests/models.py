"""Small ONNX models for the tests, written in ONNX text syntax, and the PP-OCR models."""

from __future__ import annotations

import numpy as np
import onnx
import onnx.parser
from onnx import TensorProto, helper, numpy_helper

from popfuse.benchmarks.models import PPOCR, backbone_model, ppocr, ppocr_path  # noqa: F401  (re-exported for the tests)
from popfuse.fusion import IR_VERSION


def ppocr_input(name: str, seed: int = 0) -> np.ndarray:
    """A text-like request for PP-OCR model ``name``: the detector finds text in it."""
    return ppocr(name, seed).feeds["x"]


def parse(text: str, opset: int = 13) -> onnx.ModelProto:
    """A model from ONNX text syntax, with the IR version onnxruntime reads."""
    model = onnx.parser.parse_model(
        f'<ir_version: {IR_VERSION}, opset_import: ["" : {opset}]>\n' + text
    )
    onnx.checker.check_model(model)
    return model


def scale_model(factor: float = 2.0, opset: int = 13, n: int = 4) -> onnx.ModelProto:
    """O = X * factor + B, named X/O like PopRT's example, with a weight B."""
    return parse(
        f"""
        agraph (float[1, {n}] X) => (float[1, {n}] O)
        <float[{n}] B = {{{", ".join(str(float(i)) for i in range(n))}}}, float f = {{{factor}}}>
        {{
            t = Mul(X, f)
            O = Add(t, B)
        }}
        """,
        opset,
    )


def if_model(opset: int = 13) -> onnx.ModelProto:
    """A model with its own If: O = X + 1 when sum(X) > 0, else X - 1."""
    return parse(
        """
        agraph (float[1, 3] X) => (float[1, 3] O)
        <float one = {1.0}, float zero = {0.0}>
        {
            s = ReduceSum<keepdims = 0>(X)
            c = Greater(s, zero)
            O = If(c) <
                then_branch = g1 () => (float[1, 3] a) { a = Add(X, one) },
                else_branch = g2 () => (float[1, 3] b) { b = Sub(X, one) }
            >
        }
        """,
        opset,
    )


def dynamic_model() -> onnx.ModelProto:
    """O = Relu(X) with a dynamic batch and a fixed width of 4."""
    return parse(
        """
        agraph (float[N, 4] X) => (float[N, 4] O)
        {
            O = Relu(X)
        }
        """
    )


def multi_output_model() -> onnx.ModelProto:
    """Four outputs of two element types, a scalar among them, and one output that is a weight."""
    return parse(
        """
        agraph (float[1, 4] X) => (float[1, 4] A, int64[2] S, float[2, 2] B, float M, int64[3] K)
        <int64[2] shape = {2, 2}, int64[3] K = {7, 8, 9}>
        {
            A = Relu(X)
            S = Identity(shape)
            B = Reshape(X, shape)
            M = ReduceMax<keepdims = 0>(X)
        }
        """
    )


def slow_model(steps: int = 20, width: int = 512, rows: int = 64) -> onnx.ModelProto:
    """A chain of MatMul + Relu that takes tens of milliseconds: for overload and shutdown tests."""
    w = numpy_helper.from_array((np.eye(width) * 0.999).astype(np.float32), "W")
    nodes, x = [], "X"
    for i in range(steps):
        nodes += [helper.make_node("MatMul", [x, "W"], [f"m{i}"]), helper.make_node("Relu", [f"m{i}"], [f"r{i}"])]
        x = f"r{i}"
    nodes.append(helper.make_node("Identity", [x], ["O"]))
    graph = helper.make_graph(
        nodes,
        "slow",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [rows, width])],
        [helper.make_tensor_value_info("O", TensorProto.FLOAT, [rows, width])],
        initializer=[w],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=IR_VERSION)


def batch_model() -> onnx.ModelProto:
    """O = X * 2 with a dynamic batch: batchable on dimension 0."""
    return parse(
        """
        agraph (float[N, 4] X) => (float[N, 4] O)
        <float two = {2.0}>
        {
            O = Mul(X, two)
        }
        """
    )


def affine_grid_expanded() -> onnx.ModelProto:
    """ONNX's own function-expanded AffineGrid test model (opset 20), as onnx's backend test suite builds it:
    its If branches read values of its main graph, and one branch reads its own outputs."""
    from onnx.backend.test.case.node import function_testcase_helper

    node = helper.make_node("AffineGrid", ["theta", "size"], ["grid"], align_corners=0)
    types = [helper.make_tensor_type_proto(TensorProto.FLOAT, [2, 2, 3]),
             helper.make_tensor_type_proto(TensorProto.INT64, [4])]
    ((nodes, opsets), *_), _ = function_testcase_helper(node, types, "affine_grid")
    graph = helper.make_graph(
        nodes, "affine_grid_expanded",
        [helper.make_tensor_value_info("theta", TensorProto.FLOAT, [2, 2, 3]),
         helper.make_tensor_value_info("size", TensorProto.INT64, [4])],
        [helper.make_tensor_value_info("grid", TensorProto.FLOAT, ["N", "H", "W", 2])],
    )
    model = helper.make_model(graph, opset_imports=opsets, ir_version=IR_VERSION)
    onnx.checker.check_model(model)
    return model


def local_function_model(opset: int = 20) -> onnx.ModelProto:
    """O = twice(X) through a model-local function (as torch.onnx's dynamo exporter writes them)."""
    model = onnx.parser.parse_model(
        f"""
        <ir_version: {IR_VERSION}, opset_import: ["" : {opset}, "local" : 1]>
        agraph (float[1, 4] X) => (float[1, 4] O)
        {{
            O = local.twice(X)
        }}
        <domain: "local", opset_import: ["" : {opset}]>
        twice (x) => (y) {{
            y = Add(x, x)
        }}
        """
    )
    onnx.checker.check_model(model)
    return model


def lstm_in_if_model() -> onnx.ModelProto:
    """A voice-activity-style model: X [1, T] is cut into 64-sample frames for an LSTM inside an If on the sample
    rate. Its Squeeze drops every dimension of size 1, so T = 64 gives the LSTM a rank-2 input, which only shows
    once T is fixed (as Silero VAD's If branches do at a wrong input size)."""
    hidden, width = 4, 64
    rng = np.random.default_rng(0)
    weights = [
        numpy_helper.from_array(rng.standard_normal((1, 4 * hidden, width)).astype(np.float32) * 0.1, "W"),
        numpy_helper.from_array(rng.standard_normal((1, 4 * hidden, hidden)).astype(np.float32) * 0.1, "R"),
        numpy_helper.from_array(np.array([1, -1, width], np.int64), "frames"),
        numpy_helper.from_array(np.array([0], np.int64), "axes"),
        numpy_helper.from_array(np.array(16000, np.int64), "rate16k"),
        numpy_helper.from_array(np.zeros((1, 1, hidden), np.float32), "silence"),
    ]
    then = helper.make_graph([
        helper.make_node("Reshape", ["X", "frames"], ["r"]),
        helper.make_node("Squeeze", ["r"], ["s"]),
        helper.make_node("Unsqueeze", ["s", "axes"], ["u"]),
        helper.make_node("LSTM", ["u", "W", "R"], ["", "h"], hidden_size=hidden, name="lstm"),
    ], "then", [], [helper.make_tensor_value_info("h", TensorProto.FLOAT, None)])
    other = helper.make_graph([helper.make_node("Identity", ["silence"], ["z"])], "else", [],
                              [helper.make_tensor_value_info("z", TensorProto.FLOAT, None)])
    graph = helper.make_graph(
        [helper.make_node("Equal", ["sr", "rate16k"], ["c"]),
         helper.make_node("If", ["c"], ["O"], then_branch=then, else_branch=other, name="rate")],
        "vad",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, "T"]),
         helper.make_tensor_value_info("sr", TensorProto.INT64, [])],
        [helper.make_tensor_value_info("O", TensorProto.FLOAT, [1, "B", hidden])],
        initializer=weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=IR_VERSION)
    onnx.checker.check_model(model)
    return model


def unknown_op_model() -> onnx.ModelProto:
    """O = example.custom.Frobnicate(X): valid ONNX that no backend implements."""
    graph = helper.make_graph(
        [helper.make_node("Frobnicate", ["X"], ["O"], domain="example.custom")], "custom",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("O", TensorProto.FLOAT, [1, 4])],
    )
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("example.custom", 1)]
    return helper.make_model(graph, opset_imports=opsets, ir_version=IR_VERSION)
