"""Paddle inference models (``.pdmodel``/``.json`` + ``.pdiparams``) and programs, as ONNX.

Needs the paddle extra: ``pip install 'popfuse[paddle]'`` and ``pip install
--no-deps 'paddle2onnx>=2.1,<2.2'`` (paddle2onnx pins an old onnx for its
Python package, but its exporter does not use it). The conversion runs in a
process of its own (``paddle_convert``). A conversion is cached once a
predictor has run it, keyed by the converter (paddle2onnx's and Paddle's
versions and ``paddle_convert``'s own source) and the model's content, under
``$XDG_CACHE_HOME/popfuse/paddle2onnx`` or ``Config.set_optim_cache_dir``.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from ..atomic import write_atomic

PADDLE_SUFFIXES = (".pdmodel", ".json")
# The converter's module, run in a process of its own; not imported here, so that running it with
# ``python -m`` finds it unimported.
CONVERTER_MODULE = __name__.rpartition(".")[0] + ".paddle_convert"
_CONVERTER_SOURCE = Path(__file__).with_name("paddle_convert.py")
# The line the converter's process ends its output with when it fails.
ERROR_PREFIX = "popfuse-paddle-convert:"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
INSTALL_HINT = "pip install 'popfuse[paddle]' && pip install --no-deps 'paddle2onnx>=2.1,<2.2'"
# The det model of PP-OCRv4 converts in about 10 s on one core; a converter stuck ten times longer is hung.
CONVERT_TIMEOUT_S = 600


def is_paddle_model(path: str | os.PathLike) -> bool:
    return Path(path).suffix in PADDLE_SUFFIXES


@dataclass(frozen=True)
class Conversion:
    """A Paddle model as ONNX bytes; ``keep()`` caches it once it has loaded and run."""

    data: bytes
    cache_path: Path

    def keep(self) -> None:
        if not self.cache_path.is_file():
            write_atomic(self.cache_path, self.data)


def _distribution_version(*names: str) -> str | None:
    for name in names:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


@cache
def converter() -> str:
    """The converter's identity, e.g. ``paddle2onnx 2.1.0 with paddlepaddle 3.3.1``.

    Raises:
        RuntimeError: the paddle extra or paddle2onnx is not installed.
    """
    paddle = _distribution_version("paddlepaddle", "paddlepaddle-gpu")
    p2o = _distribution_version("paddle2onnx")
    if paddle is None or p2o is None:
        raise RuntimeError(f"a Paddle model needs the paddle extra: {INSTALL_HINT}")
    return f"paddle2onnx {p2o} with paddlepaddle {paddle}"


def conversion_key(converter_id: bytes, files: Sequence[Path]) -> str:
    """The cache key of a conversion: the converter's identity and every file's content."""
    digest = hashlib.sha256(converter_id)
    for path in files:
        data = path.read_bytes()
        digest.update(len(data).to_bytes(8, "little") + data)
    return digest.hexdigest()


@cache
def _converter_id() -> bytes:
    return converter().encode() + b"\0" + _CONVERTER_SOURCE.read_bytes()


def default_cache_dir() -> Path:
    root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return root / "popfuse" / "paddle2onnx"


def onnx_from_paddle(model_file: str | os.PathLike, params_file: str | os.PathLike | None,
                     cache_dir: str | os.PathLike | None = None) -> Conversion:
    """The ONNX of a saved Paddle inference model, from the cache or converted in a separate process.

    Raises:
        RuntimeError: a file is missing, the paddle extra is not installed, or the conversion fails
            (the message names the model and the converter).
    """
    model_file = Path(model_file)
    params = Path(params_file) if params_file else model_file.with_suffix(".pdiparams")
    for path in (model_file, params):
        if not path.is_file():
            raise RuntimeError(f"Paddle model file {str(path)!r} does not exist")
    key = conversion_key(_converter_id(), (model_file, params))
    cached = Path(cache_dir or default_cache_dir()) / f"{key}.onnx"
    if cached.is_file():
        return Conversion(cached.read_bytes(), cached)
    return Conversion(_convert(model_file, params), cached)


def _convert(model_file: Path, params: Path) -> bytes:
    name = converter()
    with tempfile.TemporaryDirectory(prefix="popfuse-paddle-") as folder:
        out = Path(folder) / "model.onnx"
        command = [sys.executable, "-P", "-m", CONVERTER_MODULE, str(model_file.resolve()),
                   str(params.resolve()), str(out)]
        # Paddle's C++ logs at INFO by default; its warnings and errors still reach the captured output.
        env = {**os.environ, "GLOG_minloglevel": "2"}
        try:
            done = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True,
                                  timeout=CONVERT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise RuntimeError(
                f"{name} did not convert {str(model_file)!r} within {CONVERT_TIMEOUT_S} s"
            ) from None
        if done.returncode != 0 or not out.is_file() or out.stat().st_size == 0:
            raise RuntimeError(
                f"{name} could not convert {str(model_file)!r}: {_reason(done).rstrip('.')}. Hint: give the program "
                "and the params file that paddle.static.save_inference_model wrote together"
            )
        return out.read_bytes()


def _reason(done: subprocess.CompletedProcess) -> str:
    """Why the converter's process failed, in one line."""
    text = _ANSI.sub("", done.stdout + "\n" + done.stderr)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in reversed(lines):
        if line.startswith(ERROR_PREFIX):
            return line[len(ERROR_PREFIX):].strip()
    if done.returncode < 0:
        status = f"the converter crashed (signal {-done.returncode})"
    else:
        status = f"the converter exited with status {done.returncode}"
    errors = [line for line in lines if "error" in line.lower()]
    return f"{status}; its last message: {(errors or lines or ['(none)'])[-1][:500]}"


def onnx_from_program(program: Any, feed_list: Sequence[Any], fetch_list: Sequence[Any],
                      scope: Any = None) -> Conversion:
    """The ONNX of a ``paddle.static.Program`` between ``feed_list`` and ``fetch_list``.

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
