"""``Tensor``: a Predictor's input or output handle, as Paddle Inference has it."""

from __future__ import annotations

import enum

import numpy as np


class DataType(enum.Enum):
    """Paddle Inference's tensor data types."""

    FLOAT32 = np.dtype(np.float32)
    FLOAT16 = np.dtype(np.float16)
    FLOAT64 = np.dtype(np.float64)
    INT64 = np.dtype(np.int64)
    INT32 = np.dtype(np.int32)
    INT8 = np.dtype(np.int8)
    UINT8 = np.dtype(np.uint8)
    BOOL = np.dtype(np.bool_)


class Tensor:
    """An input (filled by the caller) or output (filled by ``run``) of a Predictor.

    The data lives in ``store``, the predictor's table of its inputs' (or its
    outputs') arrays by name, so the predictor reads and fills it directly.
    """

    def __init__(self, name: str, dtype: np.dtype, shape: list[int], store: dict[str, np.ndarray]):
        self.name = name
        self._dtype = np.dtype(dtype)
        self._shape = list(shape)
        self._store = store
        self._lod: list[list[int]] = []

    @property
    def _data(self) -> np.ndarray | None:
        return self._store.get(self.name)

    def reshape(self, shape: list[int] | tuple[int, ...]) -> None:
        """Declare the shape the next ``copy_from_cpu`` will have."""
        self._shape = [int(d) for d in shape]

    def copy_from_cpu(self, data: np.ndarray) -> None:
        """Copy ``data`` into the tensor."""
        self._store[self.name] = np.array(data, copy=True)
        self._shape = list(self._store[self.name].shape)

    def share_external_data(self, data: np.ndarray) -> None:
        """Use ``data`` as the tensor's memory, without a copy."""
        self._store[self.name] = data
        self._shape = list(data.shape)

    def copy_to_cpu(self) -> np.ndarray:
        """A copy of the tensor's data.

        Raises:
            RuntimeError: the tensor holds no data yet.
        """
        if self._data is None:
            raise RuntimeError(f"tensor {self.name!r} holds no data; run the predictor first")
        return np.array(self._data, copy=True)

    def shape(self) -> list[int]:
        return list(self._data.shape) if self._data is not None else list(self._shape)

    def type(self) -> DataType:
        return DataType(self._data.dtype if self._data is not None else self._dtype)

    def lod(self) -> list[list[int]]:
        return [list(level) for level in self._lod]

    def set_lod(self, lod: list[list[int]]) -> None:
        """Kept and returned by ``lod()``; ONNX models have no level-of-detail information to use it."""
        self._lod = [list(level) for level in lod]
