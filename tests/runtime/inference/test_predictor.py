"""Paddle Inference's Python API on popfuse: Config, Predictor, Tensor, legacy names, IPU option effects."""

from __future__ import annotations

import logging
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from popfuse.benchmarks import ocr
from popfuse.fusion.passes.precision import PrecisionWarning
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


def test_fp16_takes_float32_as_paddle_does_and_low_precision_io_switches_to_float16(tmp_path):
    onnx.save(scale_model(0.5), tmp_path / "m.onnx")
    for low_precision_io, dtype, kind in ((False, np.float32, paddle_infer.DataType.FLOAT32),
                                          (True, np.float16, paddle_infer.DataType.FLOAT16)):
        config = paddle_infer.Config(str(tmp_path / "m.onnx"))
        config.enable_ipu()
        config.set_ipu_config(ipu_enable_fp16=True)
        if low_precision_io:
            config.enable_low_precision_io()
        predictor = paddle_infer.create_predictor(config)
        (out,) = predictor.run([np.ones((1, 4), dtype)])
        assert out.dtype == dtype and predictor.get_output_handle("O").type() == kind
        np.testing.assert_allclose(out.astype(np.float32), [[0.5, 1.5, 2.5, 3.5]])


def test_fp16_reports_warns_and_refuses_when_strict(tmp_path, caplog):
    onnx.save(scale_model(1e6), tmp_path / "big.onnx")  # its output leaves float16's range

    def create(*switches):
        config = paddle_infer.Config(str(tmp_path / "big.onnx"))
        config.enable_ipu()
        config.set_ipu_config(True)
        for switch in switches:
            switch(config)
        return paddle_infer.create_predictor(config)

    with caplog.at_level(logging.INFO, logger="popfuse"), warnings.catch_warnings():
        warnings.simplefilter("error", PrecisionWarning)
        predictor = create()  # float32 outputs: the product fits, nothing to warn about
    assert "big.onnx: fp16: 2 of 2 nodes kept float32 (1 weights, 1 range)" in caplog.text
    np.testing.assert_allclose(predictor.run([np.ones((1, 4), np.float32)])[0], [[1e6, 1e6 + 1, 1e6 + 2, 1e6 + 3]])
    with pytest.warns(PrecisionWarning, match="big.onnx: fp16 error inf passes the tolerance"):
        create(lambda c: c.enable_low_precision_io())
    with pytest.raises(RuntimeError, match="big.onnx: .*the error passes the tolerance"):
        create(lambda c: c.enable_low_precision_io(), lambda c: c.enable_fp16_strict())
    with pytest.raises(RuntimeError, match=r"big.onnx: calibration 'memory': lacks the model's input\(s\) 'X'"):
        create(lambda c: c.set_fp16_calibration({"x": np.ones((1, 4), np.float32)}))
    with pytest.raises(RuntimeError, match="fp16 calibration: calibration file .*nothing.npz.* not found"):
        create(lambda c: c.set_fp16_calibration(tmp_path / "nothing.npz"))


def test_fp16_keeps_every_ppocr_models_answer_on_float32_input():
    # Paddle's IPU fp16 with its defaults: no calibration given, float32 fed and fetched.
    requests = {"det": [ocr.det_page(160, 480)], "rec": [ocr.rec_line(), ocr.rec_line("The quick brown fox")],
                "cls": [ocr.cls_line(), ocr.cls_line(flipped=True)]}
    for name, inputs in requests.items():
        config = paddle_infer.Config(str(ppocr_path(name)))
        config.enable_ipu(1, 1)
        config.set_ipu_config(True)
        predictor = paddle_infer.create_predictor(config)
        assert predictor.get_input_handle("x").type() == paddle_infer.DataType.FLOAT32
        reference = ort.InferenceSession(str(ppocr_path(name)), providers=["CPUExecutionProvider"])
        for x in inputs:
            (got,) = predictor.run([x])
            assert got.dtype == np.float32
            judged = ocr.agreement(name, reference.run(None, {"x": x})[0], got)
            assert judged.met, judged


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


def test_run_returns_none_and_run_with_a_list_returns_arrays(model_file):
    predictor = paddle_infer.create_predictor(paddle_infer.Config(str(model_file)))
    predictor.get_input_handle("X").copy_from_cpu(np.ones((1, 4), np.float32))
    assert predictor.run() is None and predictor.zero_copy_run() is True
    (out,) = predictor.run([np.zeros((1, 4), np.float32)])
    assert isinstance(out, np.ndarray)
    out[0, 0] = 99  # a copy: the output handle keeps the run's value
    assert predictor.get_output_handle("O").copy_to_cpu()[0, 0] == 0
    with pytest.raises(ValueError, match="received 2 tensors; the model has inputs X"):
        predictor.run([np.zeros((1, 4), np.float32)] * 2)
    with pytest.raises(TypeError, match="list of tensors"):
        predictor.run(np.zeros((1, 4), np.float32))
    with pytest.raises(TypeError, match="share_external_data"):
        predictor.run([[0.0, 1.0, 2.0, 3.0]])


def test_handles_are_empty_float32_before_data_as_in_paddle(model_file):
    predictor = paddle_infer.create_predictor(paddle_infer.Config(str(model_file)))
    for handle in (predictor.get_input_handle("X"), predictor.get_output_handle("O")):
        assert handle.shape() == [0] and handle.type() == paddle_infer.DataType.FLOAT32
    predictor.run([np.ones((1, 4), np.float32)])
    assert predictor.get_output_handle("O").shape() == [1, 4]


@pytest.mark.parametrize("name, data, message", [
    ("x", np.ones((2, 4), np.float64), r"input 'x': expected dtype float32, received float64"),
    ("x", np.ones((2, 4, 1), np.float32), r"input 'x': expected shape \[\?, 4\], received \[2, 4, 1\]"),
    ("x", np.ones((2, 5), np.float32), r"input 'x': expected shape \[\?, 4\], received \[2, 5\]"),
    ("ids", np.ones(2, np.float32), r"input 'ids': expected dtype int64, received float32"),
    ("x", np.ones((3, 4), np.float32), r"an Add operator cannot run on these inputs"),  # batches disagree
])
def test_inputs_the_model_refuses_raise_value_error_as_in_paddle(tmp_path, name, data, message):
    onnx.save(two_inputs_model(), tmp_path / "m.onnx")
    predictor = paddle_infer.create_predictor(paddle_infer.Config(str(tmp_path / "m.onnx")))
    feeds = {"x": np.ones((2, 4), np.float32), "ids": np.arange(2, dtype=np.int64), name: data}
    for key, value in feeds.items():
        predictor.get_input_handle(key).copy_from_cpu(value)
    with pytest.raises(ValueError, match=message):
        predictor.run()


def test_int32_fed_to_an_int64_input_runs(tmp_path):
    onnx.save(two_inputs_model(), tmp_path / "m.onnx")
    predictor = paddle_infer.create_predictor(paddle_infer.Config(str(tmp_path / "m.onnx")))
    _, z = predictor.run([np.ones((2, 4), np.float32), np.array([3, 4], np.int32)])
    np.testing.assert_array_equal(z, [[7, 7, 7, 7], [9, 9, 9, 9]])


def two_inputs_model() -> onnx.ModelProto:
    """y = relu(x); z = x + 2 * float(ids), per row: a float32 [N, 4] input and an int64 [N] one."""
    return parse(
        """
        agraph (float[N, 4] x, int64[M] ids) => (float[N, 4] y, float[N, 4] z)
        <float two = {2.0}, int64[1] axis = {1}>
        {
            y = Relu(x)
            f = Cast<to = 1>(ids)
            d = Mul(f, two)
            col = Unsqueeze(d, axis)
            z = Add(x, col)
        }
        """
    )


def test_hooks_see_every_operators_inputs_and_outputs_on_a_real_model():
    predictor = paddle_infer.create_predictor(paddle_infer.Config(str(ppocr_path("cls"))))
    seen: dict[str, list] = {"in": [], "out": []}
    predictor.register_input_hook(lambda op, name, tensor: seen["in"].append((op, name, np.asarray(tensor))))
    predictor.register_output_hook(lambda op, name, tensor: seen["out"].append((op, name, np.asarray(tensor))))
    x = ppocr_input("cls")
    (got,) = predictor.run([x])
    model = onnx.load(ppocr_path("cls"))
    produced = [(n.op_type, o) for n in model.graph.node for o in n.output if o]
    assert [(op, name) for op, name, _ in seen["out"]] == produced  # every operator's outputs, in graph order
    (output,) = predictor.get_output_names()
    hooked = {name: value for _, name, value in seen["out"]}
    np.testing.assert_array_equal(hooked[output], got)
    # This model holds its weights in Constant nodes; the input hook sees them where they are read.
    weights = {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    read = {name for _, name, _ in seen["in"]}
    assert "x" in read and weights <= read
    first_conv = next(n for n in model.graph.node if n.op_type == "Conv")
    (conv_x,) = [v for op, name, v in seen["in"] if name == first_conv.input[0] and op == "Conv"][:1]
    np.testing.assert_array_equal(conv_x, x)
    seen["out"].clear()
    predictor.get_input_handle("x").copy_from_cpu(x)
    predictor.run()  # hooks fire on handle runs too
    assert len(seen["out"]) == len(produced)


def test_hooks_on_a_fused_artifact_see_its_feeds_and_fetches(make_artifact):
    predictor = paddle_infer.create_predictor(paddle_infer.Config(str(make_artifact([scale_model(2.0)]))))
    calls = []
    predictor.register_output_hook(lambda op, name, tensor: calls.append((op, name, np.asarray(tensor).tolist())))
    predictor.run([np.ones((1, 4), np.float32)])
    assert calls == [("model0", "graph0/O", [[2.0, 3.0, 4.0, 5.0]])]


def test_a_predictor_pool_gives_independent_predictors_over_one_model():
    from concurrent.futures import ThreadPoolExecutor

    pool = paddle_infer.PredictorPool(paddle_infer.Config(str(ppocr_path("cls"))), 3)
    predictors = [pool.retrieve(i) for i in range(3)]
    assert len({id(p) for p in predictors}) == 3 and len({id(p._engine) for p in predictors}) == 1
    with pytest.raises(ValueError, match="has 3 predictors; received index 3"):
        pool.retrieve(3)
    images = [ppocr_input("cls", seed) for seed in range(3)]
    alone = [predictors[0].run([image])[0] for image in images]

    def classify(k: int) -> np.ndarray:
        handle = predictors[k].get_input_handle("x")
        for _ in range(5):
            handle.copy_from_cpu(images[k])
            predictors[k].run()
        return predictors[k].get_output_handle(predictors[k].get_output_names()[0]).copy_to_cpu()

    with ThreadPoolExecutor(3) as threads:
        together = list(threads.map(classify, range(3)))
    for got, want in zip(together, alone):
        np.testing.assert_allclose(got, want, rtol=1e-6)


@pytest.mark.parametrize("configure", [
    lambda c: c.set_ipu_config(ipu_enable_model_runtime_executor=True),
    lambda c: c.load_ipu_config(c.conf_path),
])
def test_the_model_runtime_executor_runs_the_model_as_an_artifact(tmp_path, configure):
    from popfuse.runtime.inference.predictor import RuntimeSession

    (tmp_path / "ipu.conf").write_text("ipu_enable_model_runtime_executor,true\n")
    config = paddle_infer.Config(str(ppocr_path("cls")))
    config.conf_path = tmp_path / "ipu.conf"
    config.enable_ipu(1, 1)
    configure(config)
    assert config.ipu_options["ipu_enable_model_runtime_executor"] is True
    predictor = paddle_infer.create_predictor(config)
    assert isinstance(predictor._engine.sessions[0], RuntimeSession)
    plain = paddle_infer.create_predictor(paddle_infer.Config(str(ppocr_path("cls"))))
    x = ppocr_input("cls")
    np.testing.assert_allclose(predictor.run([x])[0], plain.run([x])[0], atol=1e-6)
    assert predictor.get_input_names() == plain.get_input_names()
    with pytest.raises(ValueError, match=r"input 'x': expected shape \[1, 3, \?, \?\]"):
        predictor.run([np.zeros((2, 3, 48, 192), np.float32)])


def test_version_names_popfuse_and_its_engine():
    version = paddle_infer.get_version()
    assert version.startswith("version: 0.") and f"backend: onnxruntime {ort.__version__}" in version
    assert paddle_infer.get_trt_compile_version() == paddle_infer.get_trt_runtime_version() == (0, 0, 0)


def test_a_fused_artifact_refuses_a_run_without_data_and_a_half_fed_subgraph(make_artifact):
    model = parse(
        """
        agraph (float[1, 2] A, float[1, 2] B) => (float[1, 2] O)
        {
            O = Add(A, B)
        }
        """
    )
    predictor = paddle_infer.create_predictor(paddle_infer.Config(str(make_artifact([model, scale_model(2.0)]))))
    with pytest.raises(ValueError, match="no input has data; copy_from_cpu"):
        predictor.run()
    predictor.get_input_handle("graph0/A").copy_from_cpu(np.ones((1, 2), np.float32))
    with pytest.raises(ValueError, match="graph0/B"):
        predictor.run()
    with pytest.raises(ValueError, match=r"input 'graph0/A': expected dtype float32, received float64"):
        predictor.get_input_handle("graph0/A").copy_from_cpu(np.ones((1, 2)))
        predictor.run()
