"""One table that maps tensor element types between ONNX, NumPy, PopEF and KServe v2 names.

Pure Python and NumPy: the artifact writer and the server use it without onnx
or onnxruntime.
"""

from __future__ import annotations

import numpy as np

# (ONNX TensorProto enum value, PopEF data type name, NumPy dtype, KServe v2 datatype)
_TABLE: tuple[tuple[int, str, np.dtype, str], ...] = (
    (1, "F32", np.dtype(np.float32), "FP32"),
    (2, "U8", np.dtype(np.uint8), "UINT8"),
    (3, "S8", np.dtype(np.int8), "INT8"),
    (4, "U16", np.dtype(np.uint16), "UINT16"),
    (5, "S16", np.dtype(np.int16), "INT16"),
    (6, "S32", np.dtype(np.int32), "INT32"),
    (7, "S64", np.dtype(np.int64), "INT64"),
    (9, "BOOL", np.dtype(np.bool_), "BOOL"),
    (10, "F16", np.dtype(np.float16), "FP16"),
    (11, "F64", np.dtype(np.float64), "FP64"),
    (12, "U32", np.dtype(np.uint32), "UINT32"),
    (13, "U64", np.dtype(np.uint64), "UINT64"),
)

_ONNX_TO_POPEF = {onnx_type: name for onnx_type, name, _, _ in _TABLE}
_POPEF_TO_NUMPY = {name: dtype for _, name, dtype, _ in _TABLE}
_NUMPY_TO_POPEF = {dtype: name for _, name, dtype, _ in _TABLE}
_POPEF_TO_KSERVE = {name: kserve for _, name, _, kserve in _TABLE}
_KSERVE_TO_NUMPY = {kserve: dtype for _, _, dtype, kserve in _TABLE}


def popef_from_onnx(elem_type: int) -> str | None:
    """PopEF name of an ONNX element type, or None when popfuse cannot carry it."""
    return _ONNX_TO_POPEF.get(elem_type)


def numpy_from_popef(name: str) -> np.dtype:
    """NumPy dtype of a PopEF data type name."""
    return _POPEF_TO_NUMPY[name]


def popef_from_numpy(dtype: np.dtype) -> str | None:
    """PopEF name of a NumPy dtype, or None when popfuse cannot carry it."""
    return _NUMPY_TO_POPEF.get(np.dtype(dtype))


def kserve_from_popef(name: str) -> str:
    """KServe v2 datatype of a PopEF data type name."""
    return _POPEF_TO_KSERVE[name]


def numpy_from_kserve(datatype: str) -> np.dtype | None:
    """NumPy dtype of a KServe v2 datatype, or None for one popfuse does not carry (BYTES …)."""
    return _KSERVE_TO_NUMPY.get(datatype)


def kserve_from_numpy(dtype: np.dtype) -> str | None:
    """KServe v2 datatype of a NumPy dtype, or None."""
    name = popef_from_numpy(dtype)
    return None if name is None else _POPEF_TO_KSERVE[name]


def supported_onnx_types() -> list[int]:
    """ONNX element types an anchor may have."""
    return list(_ONNX_TO_POPEF)
