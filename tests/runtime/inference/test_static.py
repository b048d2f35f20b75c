"""IpuStrategy and IpuCompiledProgram: Paddle's checks, and what compile does to the graph."""

from __future__ import annotations

import logging

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from popfuse.benchmarks import ocr
from popfuse.runtime.inference import static as static_module
from popfuse.runtime.inference.static import IpuCompiledProgram, IpuStrategy, Program
from tests.models import parse, ppocr_path, scale_model


@pytest.fixture(autouse=True)
def fresh_main_program(monkeypatch):
    monkeypatch.setattr(static_module, "_MAIN", Program())


def test_the_seed_example_program_runs_as_written(caplog):
    # shared/seeds/001, with the import lines changed.
    from popfuse.runtime import inference as paddle
    from popfuse.runtime.inference import static

    paddle.enable_static()

    a = static.data(name='data', shape=[None, 1], dtype='int32')
    b = a + 1
    main_prog = static.default_main_program()

    ipu_strategy = static.IpuStrategy()
    ipu_strategy.set_graph_config(num_ipus=1, is_training=True, micro_batch_size=1)
    ipu_strategy.set_pipelining_config(enable_pipelining=False, batches_per_step=1, enable_gradient_accumulation=False,
                                       accumulation_factor=1)
    ipu_strategy.set_precision_config(enable_fp16=False)

    with caplog.at_level(logging.WARNING):
        program = static.IpuCompiledProgram(
            main_prog,
            ipu_strategy=ipu_strategy).compile([a.name], [b.name])
    assert caplog.text.count("compiled for inference") == 1
    (out,) = program.run({"data": np.array([[41]], np.int32)})
    np.testing.assert_array_equal(out, [[42]])
    assert out.dtype == np.int32


def test_strategy_checks_and_typed_options():
    strategy = IpuStrategy()
    with pytest.raises(RuntimeError, match="Only if num_ipus > 1, enable_manual_shard"):
        strategy.set_graph_config(num_ipus=1, enable_manual_shard=True)
    with pytest.raises(RuntimeError, match="Only if enable_manual_shard=True, enable_pipelining"):
        strategy.set_pipelining_config(enable_pipelining=True)
    strategy.set_graph_config(num_ipus=2, is_training=False, micro_batch_size=4, enable_manual_shard=True)
    strategy.set_pipelining_config(enable_pipelining=True, batches_per_step=2)
    assert strategy.get_option("micro_batch_size") == 4 and strategy.get_option("batches_per_step") == 2
    with pytest.raises(ValueError, match="'available_memory_proportion' takes float, received int"):
        strategy.set_options({"available_memory_proportion": 1})
    with pytest.raises(ValueError, match="'micro_batch_size' takes int, received float"):
        strategy.set_options({"micro_batch_size": 2.0})
    with pytest.raises(ValueError, match="unknown IPU option 'warp'"):
        strategy.set_options({"warp": 9})
    strategy.set_options({"available_memory_proportion": 0.3})
    assert strategy.get_option("available_memory_proportion") == 0.3


def test_compile_extracts_fixes_batch_cleans_scale_ops_and_applies_fp16():
    model = parse(
        """
        agraph (float[N, 4] X, float[N, 4] Unused) => (float[N, 4] O, float[N, 4] Other)
        <float one = {1.0}, float zero = {0.0}, float two = {2.0}>
        {
            a = Mul(X, one)
            b = Identity(a)
            c = Add(b, zero)
            O = Mul(c, two)
            Other = Relu(Unused)
        }
        """,
        opset=17,
    )
    strategy = IpuStrategy()
    strategy.set_graph_config(is_training=False, micro_batch_size=3)
    strategy.set_precision_config(enable_fp16=True)
    program = IpuCompiledProgram(model, ipu_strategy=strategy).compile(["X"], ["O"])
    graph = program.model.graph
    assert [n.op_type for n in graph.node if n.op_type != "Cast"] == ["Mul"]  # the forward graph, cleaned
    assert [i.name for i in graph.input] == ["X"] and [o.name for o in graph.output] == ["O"]
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_value == 3
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # Paddle feeds float32
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in graph.initializer)
    (out,) = program.run({"X": np.full((3, 4), 1.5, np.float32)})
    np.testing.assert_allclose(out, np.full((3, 4), 3.0))
    strategy.enable_low_precision_io()
    program = IpuCompiledProgram(model, ipu_strategy=strategy).compile(["X"], ["O"])
    (out,) = program.run({"X": np.full((3, 4), 1.5, np.float16)})
    assert out.dtype == np.float16


def test_pipelining_runs_batches_per_step_and_patterns_reach_the_session():
    strategy = IpuStrategy()
    strategy.set_graph_config(num_ipus=2, is_training=False, micro_batch_size=1, enable_manual_shard=True)
    strategy.set_pipelining_config(enable_pipelining=True, batches_per_step=4)
    strategy.disable_pattern("ConstantFolding")
    program = IpuCompiledProgram(scale_model(3.0), ipu_strategy=strategy).compile(["X"], ["O"])
    x = np.arange(16, dtype=np.float32).reshape(4, 4)  # four micro-batches of one row
    (out,) = program.run({"X": x})
    np.testing.assert_allclose(out, 3 * x + np.arange(4))


def test_custom_op_is_mapped_to_an_implementation():
    model = _custom_relu_model()  # a Paddle op onnxruntime has no kernel for
    strategy = IpuStrategy()
    strategy.set_graph_config(is_training=False)
    strategy.add_custom_op("custom_relu", "Relu", "", 14)
    program = IpuCompiledProgram(model, ipu_strategy=strategy).compile(["X"], ["O"])
    (out,) = program.run({"X": np.array([[-1.0, 0.5, 2.0]], np.float32)})
    np.testing.assert_allclose(out, [[0.0, 0.5, 2.0]])


def test_training_programs_are_refused():
    model = _custom_relu_model()
    model.graph.node[0].op_type = "relu_grad"
    strategy = IpuStrategy()
    with pytest.raises(RuntimeError, match="the program trains \\(it has relu_grad ops\\); popfuse runs inference"):
        IpuCompiledProgram(model, ipu_strategy=strategy).compile(["X"], ["O"])
    with pytest.raises(TypeError, match="needs the paddle extra"):
        IpuCompiledProgram(object(), ipu_strategy=strategy).compile(["X"], ["O"])


def _custom_relu_model() -> onnx.ModelProto:
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("custom_relu", ["X"], ["O"], domain="paddle")],
        "custom",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 3])],
        [helper.make_tensor_value_info("O", TensorProto.FLOAT, [1, 3])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("paddle", 1)],
                             ir_version=10)


def test_fp16_program_keeps_the_detectors_answer():
    strategy = IpuStrategy()
    strategy.set_graph_config(is_training=False, micro_batch_size=1)
    strategy.set_precision_config(enable_fp16=True)
    strategy.set_fp16_calibration({"x": ocr.det_page(96, 320, lines=("calibrate", "on this"))})
    program = IpuCompiledProgram(str(ppocr_path("det")), ipu_strategy=strategy).compile(["x"], ["sigmoid_0.tmp_0"])
    x = ocr.det_page(160, 480)
    (got,) = program.run({"x": x})
    (want,) = ort.InferenceSession(str(ppocr_path("det")), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    judged = ocr.agreement("det", want, got)
    assert judged.met, judged


def test_the_model_runtime_executor_option_runs_the_program_as_an_artifact():
    from popfuse.runtime.inference.predictor import RuntimeSession

    strategy = IpuStrategy()
    strategy.set_graph_config(is_training=False)
    strategy.set_options({"enable_model_runtime_executor": True})
    assert strategy.get_option("enable_model_runtime_executor") is True
    program = IpuCompiledProgram(scale_model(3.0), ipu_strategy=strategy).compile(["X"], ["O"])
    assert isinstance(program._session, RuntimeSession)
    (out,) = program.run({"X": np.ones((1, 4), np.float32)})
    np.testing.assert_allclose(out, [[3, 4, 5, 6]])
