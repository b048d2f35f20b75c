"""Paddle inference models and programs, with the paddle extra installed (skipped cleanly otherwise)."""

from __future__ import annotations

import importlib
import os

import numpy as np
import pytest

if os.environ.get("POPFUSE_REQUIRE_PADDLE"):  # CI installs the extra: a skip there would hide a failure
    paddle = importlib.import_module("paddle")
    importlib.import_module("paddle2onnx")
else:
    paddle = pytest.importorskip("paddle", reason="needs the paddle extra: pip install 'popfuse[paddle]'")
    pytest.importorskip("paddle2onnx", reason="needs paddle2onnx: pip install --no-deps paddle2onnx")

from popfuse.runtime import inference as paddle_infer  # noqa: E402
from popfuse.runtime.inference.static import IpuCompiledProgram, IpuStrategy  # noqa: E402

pytestmark = pytest.mark.paddle


@pytest.fixture
def saved_model(tmp_path, monkeypatch):
    """A small fc + relu model saved by paddle.static.save_inference_model, and its reference output."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    paddle.enable_static()
    main, startup = paddle.static.Program(), paddle.static.Program()
    with paddle.static.program_guard(main, startup):
        x = paddle.static.data(name="x", shape=[None, 4], dtype="float32")
        y = paddle.nn.functional.relu(paddle.static.nn.fc(x, size=3))
    executor = paddle.static.Executor(paddle.CPUPlace())
    executor.run(startup)
    data = np.random.default_rng(0).standard_normal((2, 4)).astype(np.float32)
    (want,) = executor.run(main, feed={"x": data}, fetch_list=[y])
    paddle.static.save_inference_model(str(tmp_path / "model"), [x], [y], executor, program=main)
    model = next(p for p in (tmp_path / "model.json", tmp_path / "model.pdmodel") if p.exists())
    yield model, tmp_path / "model.pdiparams", data, want, (main, x, y)
    paddle.disable_static()


def test_a_saved_paddle_model_loads_through_config(saved_model, tmp_path):
    model, params, data, want, _ = saved_model
    for _ in range(2):  # the second load comes from the conversion cache
        predictor = paddle_infer.create_predictor(paddle_infer.Config(str(model), str(params)))
        (got,) = predictor.run([data])
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert len(list((tmp_path / "cache" / "popfuse" / "paddle2onnx").glob("*.onnx"))) == 1
    with pytest.raises(RuntimeError, match="does not exist"):
        paddle_infer.create_predictor(paddle_infer.Config(str(model), str(tmp_path / "absent.pdiparams")))


def test_a_paddle_program_compiles(saved_model):
    _, _, data, want, (main, x, y) = saved_model
    strategy = IpuStrategy()
    strategy.set_graph_config(num_ipus=1, is_training=False, micro_batch_size=2)
    program = IpuCompiledProgram(main, ipu_strategy=strategy).compile([x], [y])
    (got,) = program.run({program.feed_names[0]: data})
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
