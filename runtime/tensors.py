"""Checking an array against a tensor's declared dtype and shape, for the runner and the server alike."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .display import show_shape


def mismatch(array: Any, dtype: np.dtype, shape: Sequence[int],
             dtype_name: Callable[[np.dtype], str | None] = str) -> str | None:
    """What keeps ``array`` from being a tensor of ``dtype`` and ``shape`` (-1: any size), or None if it fits.

    ``dtype_name`` spells dtypes the way the caller's users know them (numpy's, or KServe's ``FP32``).
    """
    if not isinstance(array, np.ndarray):
        return f"expected a numpy array, received {type(array).__name__}"
    if array.dtype != dtype:
        return f"expected dtype {dtype_name(dtype)}, received {dtype_name(array.dtype) or array.dtype}"
    if len(array.shape) != len(shape) or any(e >= 0 and e != r for e, r in zip(shape, array.shape)):
        return f"expected shape {show_shape(shape)}, received {list(array.shape)}"
    return None
