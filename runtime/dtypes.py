"""One table that maps tensor element types between ONNX, NumPy, PopEF and KServe v2 names.

ONNX names a type two ways: the TensorProto enum value, and the type string of
its operator schemas (``tensor(float)``), which onnxruntime reports for a
model's inputs and outputs.

Pure Python and NumPy: the artifact writer and the server use it without onnx
or onnxruntime.
"""

from __future__ import annotations

import numpy as np

# (ONNX TensorProto enum value, ONNX type string, PopEF data type name, NumPy dtype, KServe v2 datatype)
_TABLE: tuple[tuple[int, str, str, np.dtype, str], ...] = (
    (1, "tensor(float)", "F32", np.dtype(np.float32), "FP32"),
    (2, "tensor(uint8)", "U8", np.dtype(np.uint8), "UINT8"),
    (3, "tensor(int8)", "S8", np.dtype(np.int8), "INT8"),
    (4, "tensor(uint16)", "U16", np.dtype(np.uint16), "UINT16"),
    (5, "tensor(int16)", "S16", np.dtype(np.int16), "INT16"),
    (6, "tensor(int32)", "S32", np.dtype(np.int32), "INT32"),
    (7, "tensor(int64)", "S64", np.dtype(np.int64), "INT64"),
    (9, "tensor(bool)", "BOOL", np.dtype(np.bool_), "BOOL"),
    (10, "tensor(float16)", "F16", np.dtype(np.float16), "FP16"),
    (11, "tensor(double)", "F64", np.dtype(np.float64), "FP64"),
    (12, "tensor(uint32)", "U32", np.dtype(np.uint32), "UINT32"),
    (13, "tensor(uint64)", "U64", np.dtype(np.uint64), "UINT64"),
)

_ONNX_TO_POPEF = {onnx_type: name for onnx_type, _, name, _, _ in _TABLE}
_TYPE_STRING_TO_NUMPY = {string: dtype for _, string, _, dtype, _ in _TABLE}
_POPEF_TO_NUMPY = {name: dtype for _, _, name, dtype, _ in _TABLE}
_NUMPY_TO_KSERVE = {dtype: kserve for _, _, _, dtype, kserve in _TABLE}
_KSERVE_TO_NUMPY = {kserve: dtype for _, _, _, dtype, kserve in _TABLE}


def popef_from_onnx(elem_type: int) -> str | None:
    """PopEF name of an ONNX element type, or None when popfuse cannot carry it."""
    return _ONNX_TO_POPEF.get(elem_type)


def numpy_from_popef(name: str) -> np.dtype:
    """NumPy dtype of a PopEF data type name."""
    return _POPEF_TO_NUMPY[name]


def numpy_from_type_string(type_string: str) -> np.dtype | None:
    """NumPy dtype of an ONNX type string (``tensor(float)``), or None for one popfuse does not carry."""
    return _TYPE_STRING_TO_NUMPY.get(type_string)


def popef_types() -> tuple[str, ...]:
    """Every PopEF data type name popfuse carries."""
    return tuple(_POPEF_TO_NUMPY)


def numpy_from_kserve(datatype: str) -> np.dtype | None:
    """NumPy dtype of a KServe v2 datatype, or None for one popfuse does not carry (BYTES …)."""
    return _KSERVE_TO_NUMPY.get(datatype)


def kserve_from_numpy(dtype: np.dtype) -> str | None:
    """KServe v2 datatype of a NumPy dtype, or None."""
    return _NUMPY_TO_KSERVE.get(np.dtype(dtype))
