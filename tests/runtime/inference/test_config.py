"""Config: Paddle 3.3's constructors, defaults and getters, and what each option does to the sessions."""

from __future__ import annotations

import gc
import json

import numpy as np
import onnx
import pytest

from popfuse.runtime import inference as paddle_infer
from tests.models import dynamic_model, parse, scale_model

FOLDABLE = """
    agraph (float[1, 2] X) => (float[1, 2] O)
    <float[2] A = {1.0, 2.0}, float[2] B = {3.0, 4.0}>
    {
        C = Add(A, B)
        O = Add(X, C)
    }
"""


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "model.onnx"
    onnx.save(scale_model(2.0), path)
    return path


def test_constructors_as_paddles(model_file, tmp_path):
    with pytest.raises(RuntimeError, match="does not exist"):  # Paddle checks the program file at once
        paddle_infer.Config(str(tmp_path / "absent.json"), str(tmp_path / "absent.pdiparams"))
    later = paddle_infer.Config(str(tmp_path / "absent.onnx"))  # a model_dir is checked when used
    assert later.model_dir() == str(tmp_path / "absent.onnx") and later.prog_file() == ""
    with pytest.raises(RuntimeError, match="does not exist"):
        paddle_infer.create_predictor(later)
    with pytest.raises(TypeError, match="Config"):
        paddle_infer.Config(1)
    config = paddle_infer.Config(str(model_file), str(tmp_path / "model.pdiparams"))
    assert (config.prog_file(), config.params_file(), config.model_dir()) == (
        str(model_file), str(tmp_path / "model.pdiparams"), "")
    empty = paddle_infer.Config()
    empty.set_prog_file(model_file)
    empty.set_params_file(tmp_path / "p.pdiparams")
    assert (empty.prog_file(), empty.params_file()) == (str(model_file), str(tmp_path / "p.pdiparams"))
    (out,) = paddle_infer.create_predictor(empty).run([np.ones((1, 4), np.float32)])
    np.testing.assert_allclose(out, [[2, 3, 4, 5]])


def test_a_copy_is_independent_and_unused(model_file):
    config = paddle_infer.Config(str(model_file))
    config.set_cpu_math_library_num_threads(2)
    config.set_ipu_custom_info(ipu_custom_patterns={"ConstantFolding": False})
    paddle_infer.create_predictor(config)
    copy = paddle_infer.Config(config)
    assert copy.cpu_math_library_num_threads() == 2 and copy.model_dir() == str(model_file)
    copy.set_cpu_math_library_num_threads(1)
    copy.ipu_options["ipu_custom_patterns"]["Other"] = True
    assert config.cpu_math_library_num_threads() == 2 and "Other" not in config.ipu_options["ipu_custom_patterns"]
    paddle_infer.create_predictor(copy)  # the original's use does not count against the copy


def test_defaults_and_recorded_switches_read_back_as_in_paddle(model_file):
    config = paddle_infer.Config(str(model_file))
    assert config.mkldnn_enabled() and config.onednn_enabled()  # on by default in Paddle's CPU build
    config.disable_onednn()
    assert not config.mkldnn_enabled()
    assert config.memory_pool_init_size_mb() == 100 and not config.glog_info_disabled()
    assert config.onnxruntime_enabled() and not config.new_ir_enabled() and config.specify_input_name()
    config.enable_new_ir()
    config.enable_new_executor()
    config.switch_specify_input_names(False)
    config.enable_openvino_engine()
    assert config.new_ir_enabled() and not config.specify_input_name() and config.openvino_engine_enabled()
    with pytest.raises(TypeError, match="takes an int"):
        config.set_cpu_math_library_num_threads("4")
    with pytest.raises(ValueError, match="0, 1, 2 or 3"):
        config.set_optimization_level(7)
    with pytest.raises(ValueError, match="set_ipu_config"):
        config.enable_low_precision_io()
    config.enable_ipu()
    config.set_ipu_config(True)
    config.enable_low_precision_io()
    assert "low_precision_io" in config.summary()


def optimised_nodes(tmp_path, monkeypatch, adjust) -> int:
    """How many nodes the optimised FOLDABLE graph keeps under the Config ``adjust`` sets up."""
    onnx.save(parse(FOLDABLE), tmp_path / "f.onnx")
    monkeypatch.chdir(tmp_path)
    config = paddle_infer.Config(str(tmp_path / "f.onnx"))
    config.switch_ir_debug(True)
    adjust(config)
    predictor = paddle_infer.create_predictor(config)
    np.testing.assert_allclose(predictor.run([np.zeros((1, 2), np.float32)])[0], [[4, 6]])
    return len(onnx.load(tmp_path / "f_optimized.onnx").graph.node)


@pytest.mark.parametrize("adjust, nodes", [
    (lambda c: None, 1),
    (lambda c: c.set_optimization_level(0), 2),
    (lambda c: c.set_optimization_level(1), 1),
    (lambda c: c.delete_pass("ConstantFolding"), 2),
    (lambda c: c.pass_builder().delete_pass("ConstantFolding"), 2),
    (lambda c: (c.switch_ir_optim(False), c.enable_ort_optimization()), 1),
])
def test_optimisation_switches_act_on_onnxruntimes_optimiser(tmp_path, monkeypatch, adjust, nodes):
    assert optimised_nodes(tmp_path, monkeypatch, adjust) == nodes


def test_disable_glog_info_quiets_onnxruntimes_warnings(tmp_path, capfd):
    # An initializer no node reads: onnxruntime warns that it removes it.
    onnx.save(parse("""
        agraph (float[1, 2] X) => (float[1, 2] O)
        <float[2] unused = {1.0, 2.0}>
        {
            O = Relu(X)
        }
    """), tmp_path / "u.onnx")
    logged = {}
    for quiet in (False, True):
        config = paddle_infer.Config(str(tmp_path / "u.onnx"))
        if quiet:
            config.disable_glog_info()
        paddle_infer.create_predictor(config)
        logged[quiet] = capfd.readouterr().err
    assert "Removing initializer 'unused'" in logged[False] and "Removing initializer" not in logged[True]


def test_enable_profile_writes_onnxruntimes_trace(model_file, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = paddle_infer.Config(str(model_file))
    config.enable_profile()
    predictor = paddle_infer.create_predictor(config)
    predictor.run([np.ones((1, 4), np.float32)])
    del predictor
    gc.collect()
    (trace,) = tmp_path.glob("model_profile_*.json")
    events = json.loads(trace.read_text())
    assert {"Mul", "Add"} <= {e.get("args", {}).get("op_name") for e in events}


def test_shape_range_info_in_paddles_format(tmp_path):
    onnx.save(dynamic_model(), tmp_path / "d.onnx")
    config = paddle_infer.Config(str(tmp_path / "d.onnx"))
    config.collect_shape_range_info(str(tmp_path / "shapes.pbtxt"))
    assert config.shape_range_info_collected() and config.shape_range_info_path() == str(tmp_path / "shapes.pbtxt")
    predictor = paddle_infer.create_predictor(config)
    for batch in (2, 5, 3, 3):
        predictor.run([np.ones((batch, 4), np.float32)])
    entry = ["min_shape: 2", "min_shape: 4", "max_shape: 5", "max_shape: 4", "opt_shape: 3", "opt_shape: 4"]
    expected = "".join(f'shape_range_info {{\n  name: "{n}"\n' + "".join(f"  {e}\n" for e in entry) + "}\n"
                       for n in ("O", "X"))
    assert (tmp_path / "shapes.pbtxt").read_text() == expected
