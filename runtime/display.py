"""How popfuse shows things to people: byte sizes, shapes with dynamic dimensions, sources and tables."""

from __future__ import annotations

import os
from collections.abc import Sequence


def human_size(n: float) -> str:
    """Bytes as B/KB/MB/GB (powers of 1000), with two decimals above bytes."""
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1000
    return str(n)


def show_shape(shape: Sequence[int]) -> str:
    """A shape with ``?`` for a dimension set at run time (-1): ``[?, 3, 48, 320]``."""
    return "[" + ", ".join("?" if d < 0 else str(d) for d in shape) + "]"


def source_label(source: object) -> str:
    """How errors name an artifact or model given as a path or as bytes."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return "<bytes>"
    return os.fspath(source) if isinstance(source, (str, os.PathLike)) else repr(source)


def table(header: Sequence[str], rows: Sequence[Sequence[object]], indent: str = "  ") -> list[str]:
    """Rows as lines of a table whose columns are as wide as their widest cell, two spaces apart."""
    cells = [[str(c) for c in header], *([str(c) for c in row] for row in rows)]
    widths = [max(len(row[k]) for row in cells) for k in range(len(header))]
    return [indent + "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
