"""Build PopRT's two example models, then fuse them as config.yaml says.

Run from anywhere: ``python examples/model_fusion/compile.py``. It writes
model0.onnx, model1.onnx, model_fusion.onnx and executable.popef beside itself.
"""

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import popfuse
from popfuse.fusion import IR_VERSION

HERE = Path(__file__).resolve().parent
OPSET = 11


def model0() -> onnx.ModelProto:
    """O = Reshape(Add(X, Y), C) with C = [2]; fp32, opset 11."""
    graph = helper.make_graph(
        [
            helper.make_node("Add", ["X", "Y"], ["sum"]),
            helper.make_node("Reshape", ["sum", "C"], ["O"]),
        ],
        "model0",
        [
            helper.make_tensor_value_info("X", TensorProto.FLOAT, ["batch", 2]),
            helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["batch", 2]),
        ],
        [helper.make_tensor_value_info("O", TensorProto.FLOAT, [2])],
        initializer=[numpy_helper.from_array(np.array([2], np.int64), "C")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION)


def model1() -> onnx.ModelProto:
    """O = Concat([X, C], axis=1) with C = [[1.5, 2.0]] in fp16; opset 11."""
    graph = helper.make_graph(
        [helper.make_node("Concat", ["X", "C"], ["O"], axis=1)],
        "model1",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT16, ["batch", 1])],
        [helper.make_tensor_value_info("O", TensorProto.FLOAT16, ["batch", 3])],
        initializer=[numpy_helper.from_array(np.array([[1.5, 2.0]], np.float16), "C")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION)


def main() -> None:
    onnx.save(model0(), HERE / "model0.onnx")
    onnx.save(model1(), HERE / "model1.onnx")
    result = popfuse.build(HERE / "config.yaml", progress=print)
    print(f"wrote {result.popef_path}")


if __name__ == "__main__":
    main()
