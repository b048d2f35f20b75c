"""Paddle Inference's IPU configuration file, as ``Config.load_ipu_config`` reads it.

One ``key,value`` per line, split at the first comma, spaces removed. Exactly
the eleven keys below are allowed; anything else, an empty line or a ``#``
comment included, is an invalid key, as in Paddle. Booleans are true only for
``true`` (any case) or ``1``. List values look like
``[[custom_relu, Relu, custom.ops, 1], [custom_gelu, Gelu, custom.ops, 1]]``;
unlike Paddle's own parser, several entries parse correctly.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

_LIST = re.compile(r"^\[(\[[^\[\]]*\](,\[[^\[\]]*\])*)?\]$")
_ENTRY = re.compile(r"\[([^\[\]]*)\]")


def _bool(value: str) -> bool:
    return value.lower() in ("true", "1")


def _int(value: str) -> int:
    return int(value)


def _float(value: str) -> float:
    return float(value)


def _entries(value: str) -> list[list[str]]:
    if not _LIST.match(value):
        raise ValueError(f"expected a list like [[a, b, c, 1]], received {value!r}")
    return [entry.split(",") if entry else [] for entry in _ENTRY.findall(value[1:-1])]


def _ops(value: str) -> list[list[str]]:
    entries = _entries(value)
    for entry in entries:
        if len(entry) != 4:
            raise ValueError(f"each custom op needs [paddle op, IPU op, domain, version], received {entry}")
    return entries


def _patterns(value: str) -> dict[str, bool]:
    entries = _entries(value)
    for entry in entries:
        if len(entry) != 2:
            raise ValueError(f"each custom pattern needs [name, true|false], received {entry}")
    return {name: _bool(state) for name, state in entries}


PARSERS = {
    "ipu_device_num": _int,
    "ipu_micro_batch_size": _int,
    "ipu_enable_pipelining": _bool,
    "ipu_batches_per_step": _int,
    "ipu_enable_fp16": _bool,
    "ipu_replica_num": _int,
    "ipu_available_memory_proportion": _float,
    "ipu_enable_half_partial": _bool,
    "ipu_custom_ops_info": _ops,
    "ipu_custom_patterns": _patterns,
    "ipu_enable_model_runtime_executor": _bool,
}


def load_ipu_config(path: str | os.PathLike) -> dict[str, Any]:
    """Parse an IPU configuration file into option name → value.

    Raises:
        RuntimeError: the file does not exist (Paddle's error type).
        ValueError: an invalid key, or a value that does not parse.
    """
    path = Path(path)
    if not path.is_file():
        raise RuntimeError(f"IPU config file {str(path)!r} does not exist")
    options: dict[str, Any] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        key, _, value = line.replace(" ", "").partition(",")
        if key not in PARSERS:
            raise ValueError(f"invalid key {key!r} in IPU config (line {number}); valid keys: {', '.join(PARSERS)}")
        try:
            options[key] = PARSERS[key](value)
        except ValueError as e:
            raise ValueError(f"invalid value {value!r} for {key} in IPU config (line {number}): {e}") from None
    return options
