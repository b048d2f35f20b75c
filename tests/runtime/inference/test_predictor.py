"""Paddle Inference's Python API on popfuse: Config, Predictor, Tensor, legacy names, IPU option effects."""

from __future__ import annotations

import logging

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from popfuse.runtime import inference as paddle_infer
from tests.models import batch_model, parse, ppocr_input, ppocr_path, scale_model


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "model"  # no extension, as in Paddle's examples
    onnx.save(scale_model(2.0), path)
    return path


def test_the_seed_example_program_runs_as_written(model_file, tmp_path, caplog):
    # shared/seeds/003: the Python predictor API example, with its own names.
    AnalysisConfig, create_paddle_predictor = paddle_infer.AnalysisConfig, paddle_infer.create_paddle_predictor

    def create_predictor():
        config = AnalysisConfig(str(model_file), str(tmp_path / "params"))
        config.switch_use_feed_fetch_ops(False)
        config.enable_use_gpu(100, 0)
        config.enable_mkldnn()
        config.enable_memory_optim()
        predictor = create_paddle_predictor(config)
        return predictor

    def run(predictor, data):
        input_names = predictor.get_input_names()
        for i, name in enumerate(input_names):
            input_tensor = predictor.get_input_tensor(name)
            input_tensor.reshape(data[i].shape)
            input_tensor.copy_from_cpu(data[i].copy())
        predictor.zero_copy_run()
        results = []
        output_names = predictor.get_output_names()
        for name in output_names:
            output_tensor = predictor.get_output_tensor(name)
            output_data = output_tensor.copy_to_cpu()
            results.append(output_data)
        return results

    with caplog.at_level(logging.ERROR):
        results = run(create_predictor(), [np.ones((1, 4), np.float32)])
    np.testing.assert_allclose(results[0], [[2, 3, 4, 5]])
    assert "no CUDA provider" in caplog.text  # no GPU here: logged, and the model ran on the CPU


def test_config_errors_have_paddles_types(model_file, tmp_path):
    with pytest.raises(RuntimeError, match="does not exist"):
        paddle_infer.create_predictor(paddle_infer.Config(str(tmp_path / "absent.onnx")))
    with pytest.raises(RuntimeError, match="no model is set"):
        paddle_infer.create_predictor(paddle_infer.Config())
    config = paddle_infer.Config(str(model_file))
    paddle_infer.create_predictor(config)
    with pytest.raises(ValueError, match=r"^Note: Each config can only be used for one predictor\.$"):
        paddle_infer.create_predictor(config)
    with pytest.raises(RuntimeError, match="TensorRT"):
        paddle_infer.Config(str(model_file)).enable_tensorrt_engine()


def test_handles_run_with_a_list_clone_and_tensor_api(model_file):
    config = paddle_infer.Config()
    config.set_model_buffer(model_file.read_bytes(), model_file.stat().st_size, b"", 0)
    config.set_cpu_math_library_num_threads(1)
    predictor = paddle_infer.create_predictor(config)
    with pytest.raises(RuntimeError, match="no input 'Z'; inputs: X"):
        predictor.get_input_handle("Z")
    with pytest.raises(RuntimeError, match="no output 'Z'"):
        predictor.get_output_handle("Z")
    with pytest.raises(ValueError, match="have no data"):
        predictor.run()
    (out,) = predictor.run([np.zeros((1, 4), np.float32)])
    np.testing.assert_allclose(out, [[0, 1, 2, 3]])
    handle = predictor.get_output_handle("O")
    assert handle.shape() == [1, 4] and handle.type() == paddle_infer.DataType.FLOAT32
    clone = predictor.clone()
    assert clone._engine is predictor._engine  # the same sessions: weights are shared
    x = clone.get_input_handle("X")
    shared = np.full((1, 4), 1.0, np.float32)
    x.share_external_data(shared)
    x.set_lod([[0, 1]])
    assert x.lod() == [[0, 1]]
    clone.run()
    np.testing.assert_allclose(clone.get_output_handle("O").copy_to_cpu(), [[2, 3, 4, 5]])
    predictor.clear_intermediate_tensor()
    with pytest.raises(RuntimeError, match="holds no data"):
        predictor.get_output_handle("O").copy_to_cpu()
    assert predictor.try_shrink_memory() == 0
    predictor.run([np.zeros((1, 4), np.float32)])  # the shrinking run
    assert "use_ipu" in config.summary() and "cpu_math_thread" in config.summary()


def test_micro_batch_fixes_the_dynamic_batch_dimension(tmp_path):
    onnx.save(batch_model(), tmp_path / "b.onnx")
    config = paddle_infer.Config(str(tmp_path / "b.onnx"))
    config.enable_ipu(1, 4)
    predictor = paddle_infer.create_predictor(config)
    (out,) = predictor.run([np.ones((4, 4), np.float32)])
    np.testing.assert_allclose(out, 2 * np.ones((4, 4)))
    with pytest.raises(ValueError, match=r"input 'X': expected shape \[4, 4\], received \[3, 4\]"):
        predictor.run([np.ones((3, 4), np.float32)])


def test_fp16_converts_the_graph_and_its_io(tmp_path):
    onnx.save(scale_model(0.5), tmp_path / "m.onnx")
    config = paddle_infer.Config(str(tmp_path / "m.onnx"))
    config.enable_ipu()
    config.set_ipu_config(ipu_enable_fp16=True)
    predictor = paddle_infer.create_predictor(config)
    (out,) = predictor.run([np.ones((1, 4), np.float16)])
    assert out.dtype == np.float16 and predictor.get_output_handle("O").type() == paddle_infer.DataType.FLOAT16
    np.testing.assert_allclose(out.astype(np.float32), [[0.5, 1.5, 2.5, 3.5]])


def test_replicas_and_batches_per_step(tmp_path):
    onnx.save(batch_model(), tmp_path / "b.onnx")
    config = paddle_infer.Config(str(tmp_path / "b.onnx"))
    config.enable_ipu(1, 2, True, 3)  # micro batch 2, pipelining, 3 batches per step
    config.set_ipu_config(ipu_replica_num=2)
    predictor = paddle_infer.create_predictor(config)
    assert len(predictor._engine.sessions) == 2
    x = np.arange(24, dtype=np.float32).reshape(6, 4)  # 3 micro-batches of 2 rows
    for _ in range(3):  # round-robin over the replicas
        (out,) = predictor.run([x])
        np.testing.assert_allclose(out, 2 * x)


def test_custom_patterns_turn_optimisations_off(tmp_path, monkeypatch):
    foldable = parse(
        """
        agraph (float[1, 2] X) => (float[1, 2] O)
        <float[2] A = {1.0, 2.0}, float[2] B = {3.0, 4.0}>
        {
            C = Add(A, B)
            O = Add(X, C)
        }
        """
    )
    onnx.save(foldable, tmp_path / "f.onnx")
    monkeypatch.chdir(tmp_path)
    ops = {}
    for state in (True, False):
        config = paddle_infer.Config(str(tmp_path / "f.onnx"))
        config.switch_ir_debug(True)
        config.set_ipu_custom_info(ipu_custom_patterns={"ConstantFolding": state})
        config.enable_ipu()
        predictor = paddle_infer.create_predictor(config)
        np.testing.assert_allclose(predictor.run([np.zeros((1, 2), np.float32)])[0], [[4, 6]])
        ops[state] = [n.op_type for n in onnx.load(tmp_path / "f_optimized.onnx").graph.node]
        assert (tmp_path / "f_optimized.dot").read_text().startswith("digraph")
    assert ops[True] == ["Add"] and ops[False] == ["Add", "Add"]


def test_enable_ipu_after_load_ipu_config_overwrites_the_shared_values(tmp_path):
    path = tmp_path / "ipu.conf"
    path.write_text("ipu_device_num,4\nipu_micro_batch_size,8\nipu_enable_fp16,true\nipu_batches_per_step,2\n")
    config = paddle_infer.Config()
    config.load_ipu_config(path)
    assert config.use_ipu() and config.ipu_options["ipu_micro_batch_size"] == 8
    config.enable_ipu()
    assert config.ipu_options["ipu_device_num"] == 1 and config.ipu_options["ipu_micro_batch_size"] == 1
    assert config.ipu_options["ipu_batches_per_step"] == 1
    assert config.ipu_options["ipu_enable_fp16"] is True  # not one of enable_ipu's four


def test_fused_artifact_through_the_predictor(make_artifact):
    config = paddle_infer.Config(str(make_artifact([scale_model(2.0), scale_model(3.0, n=3)])))
    predictor = paddle_infer.create_predictor(config)
    assert predictor.get_input_names() == ["graph0/X", "graph1/X"]
    predictor.get_input_handle("graph1/X").copy_from_cpu(np.ones((1, 3), np.float32))
    predictor.run()
    np.testing.assert_allclose(predictor.get_output_handle("graph1/O").copy_to_cpu(), [[3, 4, 5]])


def test_real_model_matches_onnxruntime(tmp_path):
    config = paddle_infer.Config(str(ppocr_path("cls")))
    config.enable_ipu(1, 1)
    predictor = paddle_infer.create_predictor(config)
    x = ppocr_input("cls")
    (got,) = predictor.run([x])
    (want,) = ort.InferenceSession(str(ppocr_path("cls")), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_custom_ops_info_maps_a_paddle_op_to_a_registered_implementation(tmp_path):
    from onnxruntime_extensions import PyCustomOpDef, onnx_op

    @onnx_op(op_type="PopfuseClampRelu", inputs=[PyCustomOpDef.dt_float], outputs=[PyCustomOpDef.dt_float])
    def clamp_relu(x):
        return np.clip(x, 0, 1)

    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("custom_relu", ["X"], ["O"], domain="paddle")],
        "custom",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 3])],
        [helper.make_tensor_value_info("O", TensorProto.FLOAT, [1, 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("paddle", 1)],
                              ir_version=10)
    onnx.save(model, tmp_path / "custom.onnx")
    (tmp_path / "ipu.conf").write_text("ipu_custom_ops_info,[[custom_relu, PopfuseClampRelu, ai.onnx.contrib, 1]]\n")
    config = paddle_infer.Config(str(tmp_path / "custom.onnx"))
    config.load_ipu_config(tmp_path / "ipu.conf")
    (out,) = paddle_infer.create_predictor(config).run([np.array([[-2.0, 0.5, 3.0]], np.float32)])
    np.testing.assert_allclose(out, [[0.0, 0.5, 1.0]])


@pytest.mark.parametrize("proportion, ran", [(1e-7, False), (0.5, True)])
def test_available_memory_proportion_bounds_the_arena(tmp_path, proportion, ran):
    import subprocess
    import sys
    import textwrap

    onnx.save(parse(
        """
        agraph (float[1024, 1024] X) => (float[1024, 1024] O)
        {
            a = Relu(X)
            O = Neg(a)
        }
        """
    ), tmp_path / "big.onnx")
    # The arena is process-wide in onnxruntime, so each bound gets a process of its own.
    script = textwrap.dedent(f"""
        import numpy as np
        from popfuse.runtime import inference as paddle_infer
        config = paddle_infer.Config({str(tmp_path / 'big.onnx')!r})
        config.enable_ipu()
        config.set_ipu_config(ipu_available_memory_proportion={proportion})
        predictor = paddle_infer.create_predictor(config)
        try:
            predictor.run([np.ones((1024, 1024), np.float32)])
            print("ran")
        except RuntimeError as e:
            print("refused:", e)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert ("ran" in done.stdout) == ran, done.stdout


def test_ir_optim_off_keeps_the_graph_as_it_is(tmp_path, monkeypatch):
    onnx.save(parse(
        """
        agraph (float[1, 2] X) => (float[1, 2] O)
        <float[2] A = {1.0, 2.0}, float[2] B = {3.0, 4.0}>
        {
            C = Add(A, B)
            O = Add(X, C)
        }
        """
    ), tmp_path / "g.onnx")
    monkeypatch.chdir(tmp_path)
    kept = {}
    for optim in (True, False):
        config = paddle_infer.Config(str(tmp_path / "g.onnx"))
        config.switch_ir_optim(optim)
        config.switch_ir_debug(True)
        assert config.ir_optim() is optim
        paddle_infer.create_predictor(config).run([np.zeros((1, 2), np.float32)])
        kept[optim] = len(onnx.load(tmp_path / "g_optimized.onnx").graph.node)
    assert kept == {True: 1, False: 2}


def test_half_partial_is_accepted_and_changes_nothing(model_file):
    results = []
    for half in (False, True):
        config = paddle_infer.Config(str(model_file))
        config.enable_ipu()
        config.set_ipu_config(ipu_enable_half_partial=half)
        assert config.ipu_options["ipu_enable_half_partial"] is half
        results.append(paddle_infer.create_predictor(config).run([np.ones((1, 4), np.float32)])[0])
    np.testing.assert_array_equal(results[0], results[1])
