"""One table that maps tensor element types between ONNX, NumPy and PopEF names.

Pure Python and NumPy: the artifact writer and the server use it without onnx
or onnxruntime.
"""

from __future__ import annotations

import numpy as np

# (ONNX TensorProto enum value, PopEF data type name, NumPy dtype)
_TABLE: tuple[tuple[int, str, np.dtype], ...] = (
    (1, "F32", np.dtype(np.float32)),
    (2, "U8", np.dtype(np.uint8)),
    (3, "S8", np.dtype(np.int8)),
    (4, "U16", np.dtype(np.uint16)),
    (5, "S16", np.dtype(np.int16)),
    (6, "S32", np.dtype(np.int32)),
    (7, "S64", np.dtype(np.int64)),
    (9, "BOOL", np.dtype(np.bool_)),
    (10, "F16", np.dtype(np.float16)),
    (11, "F64", np.dtype(np.float64)),
    (12, "U32", np.dtype(np.uint32)),
    (13, "U64", np.dtype(np.uint64)),
)

_ONNX_TO_POPEF = {onnx_type: name for onnx_type, name, _ in _TABLE}
_POPEF_TO_NUMPY = {name: dtype for _, name, dtype in _TABLE}
_NUMPY_TO_POPEF = {dtype: name for _, name, dtype in _TABLE}


def popef_from_onnx(elem_type: int) -> str | None:
    """PopEF name of an ONNX element type, or None when popfuse cannot carry it."""
    return _ONNX_TO_POPEF.get(elem_type)


def numpy_from_popef(name: str) -> np.dtype:
    """NumPy dtype of a PopEF data type name."""
    return _POPEF_TO_NUMPY[name]


def popef_from_numpy(dtype: np.dtype) -> str | None:
    """PopEF name of a NumPy dtype, or None when popfuse cannot carry it."""
    return _NUMPY_TO_POPEF.get(np.dtype(dtype))


def supported_onnx_types() -> list[int]:
    """ONNX element types an anchor may have."""
    return list(_ONNX_TO_POPEF)
