"""Paddle inference models (``.pdmodel``/``.json`` + ``.pdiparams``) and programs, through paddle2onnx.

Needs the paddle extra: ``pip install 'popfuse[paddle]'`` and ``pip install
--no-deps paddle2onnx`` (paddle2onnx pins an old onnx for its Python
package, but its exporter does not use it). Conversions are cached by the
model's content, under ``$XDG_CACHE_HOME/popfuse/paddle2onnx``.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..atomic import write_atomic

PADDLE_SUFFIXES = (".pdmodel", ".json")


def is_paddle_model(path: str | os.PathLike) -> bool:
    return Path(path).suffix in PADDLE_SUFFIXES


def _paddle2onnx():
    try:
        import paddle2onnx
    except ImportError:
        raise RuntimeError(
            "a Paddle model needs the paddle extra: pip install 'popfuse[paddle]' && pip install --no-deps paddle2onnx"
        ) from None
    return paddle2onnx


def _cache_dir() -> Path:
    root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return root / "popfuse" / "paddle2onnx"


def onnx_from_paddle(model_file: str | os.PathLike, params_file: str | os.PathLike | None) -> bytes:
    """The ONNX bytes of a saved Paddle inference model, converted once and cached.

    Raises:
        RuntimeError: a file is missing, the paddle extra is not installed, or the conversion fails.
    """
    model_file = Path(model_file)
    params = Path(params_file) if params_file else model_file.with_suffix(".pdiparams")
    for path in (model_file, params):
        if not path.is_file():
            raise RuntimeError(f"Paddle model file {str(path)!r} does not exist")
    digest = hashlib.sha256(model_file.read_bytes() + b"\0" + params.read_bytes()).hexdigest()
    cached = _cache_dir() / f"{digest}.onnx"
    if cached.is_file():
        return cached.read_bytes()
    try:
        data = _paddle2onnx().export(str(model_file), str(params))
    except RuntimeError:
        raise
    except Exception as e:  # paddle2onnx raises assorted errors from C++
        raise RuntimeError(f"paddle2onnx could not convert {str(model_file)!r}: {e}") from e
    write_atomic(cached, data)
    return data


def onnx_from_program(program: Any, feed_list: Sequence[Any], fetch_list: Sequence[Any], scope: Any = None) -> bytes:
    """The ONNX bytes of a ``paddle.static.Program`` between ``feed_list`` and ``fetch_list``.

    The lists hold the program's variables, or names of them (Paddle 3's IR names only its inputs,
    parameters and outputs).
    """
    import paddle

    block = program.global_block()
    feeds = [block.var(v) if isinstance(v, str) else v for v in feed_list]
    fetches = [block.var(v) if isinstance(v, str) else v for v in fetch_list]
    executor = paddle.static.Executor(paddle.CPUPlace())
    with tempfile.TemporaryDirectory(prefix="popfuse-paddle-") as folder:
        prefix = os.path.join(folder, "model")
        if scope is not None:
            with paddle.static.scope_guard(scope):
                paddle.static.save_inference_model(prefix, feeds, fetches, executor, program=program)
        else:
            paddle.static.save_inference_model(prefix, feeds, fetches, executor, program=program)
        model_file = next(p for p in (Path(prefix + s) for s in PADDLE_SUFFIXES) if p.is_file())
        return onnx_from_paddle(model_file, prefix + ".pdiparams")
