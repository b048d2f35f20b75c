"""Paddle models as ONNX: the cache key (always), and with the paddle extra the real converter's runs:
caching only what ran, and each way it fails turned into a RuntimeError that names the model and the converter."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

from popfuse.runtime import inference as paddle_infer
from popfuse.runtime.inference import paddle_models
from popfuse.runtime.inference.paddle_models import conversion_key
from tests.runtime.inference.paddle_env import import_paddle, save_small_program


def test_the_cache_key_covers_the_converter_and_every_files_content(tmp_path):
    model, params = tmp_path / "m.pdmodel", tmp_path / "m.pdiparams"
    model.write_bytes(b"program")
    params.write_bytes(b"weights")
    key = conversion_key(b"paddle2onnx 2.1.0 with paddlepaddle 3.3.1", (model, params))
    assert key != conversion_key(b"paddle2onnx 2.1.1 with paddlepaddle 3.3.1", (model, params))
    params.write_bytes(b"weight")
    model.write_bytes(b"programs")  # the same bytes in all, split differently
    assert key != conversion_key(b"paddle2onnx 2.1.0 with paddlepaddle 3.3.1", (model, params))


@pytest.fixture
def small(tmp_path, monkeypatch):
    import_paddle()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return save_small_program(tmp_path / "model", old_format=False)


def cached(root) -> list:
    return sorted(root.glob("**/*.onnx"))


@pytest.mark.paddle
def test_a_conversion_is_cached_once_it_has_run(small, tmp_path, monkeypatch):
    program, params = small
    predictor = paddle_infer.create_predictor(paddle_infer.Config(str(program), str(params)))
    assert cached(tmp_path / "cache") == []  # converted, not yet run
    with pytest.raises(ValueError):
        predictor.run([np.ones((2, 5), np.float32), np.arange(2)])
    assert cached(tmp_path / "cache") == []  # a refused run proves nothing
    predictor.run([np.ones((2, 4), np.float32), np.arange(2)])
    (entry,) = cached(tmp_path / "cache" / "popfuse" / "paddle2onnx")

    def no_converter(*args, **kwargs):
        raise AssertionError("the converter ran although the conversion is cached")

    monkeypatch.setattr(subprocess, "run", no_converter)
    again = paddle_infer.create_predictor(paddle_infer.Config(str(program), str(params)))
    x, ids = np.ones((2, 4), np.float32), np.arange(2)
    np.testing.assert_array_equal(again.run([x, ids])[1], predictor.run([x, ids])[1])
    assert cached(tmp_path / "cache") == [entry]


@pytest.mark.paddle
def test_set_optim_cache_dir_holds_the_conversions(small, tmp_path):
    program, params = small
    config = paddle_infer.Config(str(program), str(params))
    config.set_optim_cache_dir(str(tmp_path / "optim"))
    paddle_infer.create_predictor(config).run([np.ones((1, 4), np.float32), np.arange(1)])
    assert len(cached(tmp_path / "optim")) == 1 and cached(tmp_path / "cache") == []


def broken(folder, small) -> dict:
    """Inputs on which paddle2onnx raises, calls sys.exit(-1), and aborts."""
    program, params = small
    (folder / "random.pdmodel").write_bytes(np.random.default_rng(0).bytes(5000))
    (folder / "random.pdiparams").write_bytes(b"\0" * 100)
    (folder / "empty.json").write_text('{"base_code": {"magic": "pir"}, "program": {}}')
    (folder / "empty.pdiparams").write_bytes(b"\0" * 100)
    (folder / "cut.json").write_bytes(program.read_bytes())
    (folder / "cut.pdiparams").write_bytes(np.random.default_rng(0).bytes(10))
    return {
        "raises": (folder / "random.pdmodel", "Failed to parse program_desc"),
        "exits": (folder / "empty.json", "exited with status 255"),
        "aborts": (folder / "cut.json", "crashed"),
    }


@pytest.mark.paddle
@pytest.mark.parametrize("how", ["raises", "exits", "aborts"])
def test_a_failing_converter_is_a_runtime_error_not_the_end_of_the_process(small, tmp_path, how):
    model, reason = broken(tmp_path, small)[how]
    with pytest.raises(RuntimeError) as caught:
        paddle_infer.create_predictor(paddle_infer.Config(str(model), str(model.with_suffix(".pdiparams"))))
    message = str(caught.value)
    assert str(model) in message and paddle_models.converter() in message and reason in message
    assert "paddle2onnx 2." in message and "Hint:" in message
    assert cached(tmp_path / "cache") == []


@pytest.mark.paddle
def test_a_missing_params_file_is_named(small, tmp_path):
    program, _ = small
    with pytest.raises(RuntimeError, match="absent.pdiparams' does not exist"):
        paddle_infer.create_predictor(paddle_infer.Config(str(program), str(tmp_path / "absent.pdiparams")))
