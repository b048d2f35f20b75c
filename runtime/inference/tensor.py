"""``Tensor``: a Predictor's input or output handle, and Paddle Inference's enums, with Paddle 3.3's values."""

from __future__ import annotations

import enum
from multiprocessing import resource_tracker, shared_memory
from typing import Any

import numpy as np


class DataType(enum.IntEnum):
    """Paddle Inference's tensor data types (``paddle.inference.DataType``), with Paddle's integer values."""

    FLOAT32 = 0
    INT64 = 1
    INT32 = 2
    UINT8 = 3
    INT8 = 4
    FLOAT16 = 5
    BOOL = 6
    FLOAT64 = 7
    BFLOAT16 = 8


class PlaceType(enum.IntEnum):
    """Where a tensor lives (``paddle.inference.PlaceType``)."""

    UNK = -1
    CPU = 0
    GPU = 1
    XPU = 2
    CUSTOM = 4


class PrecisionType(enum.IntEnum):
    """The precision a model runs in (``paddle.inference.PrecisionType``, also ``Config.Precision``)."""

    Float32 = 0
    Int8 = 1
    Half = 2
    Bfloat16 = 3


# numpy has no bfloat16: no array is of that type, and no model popfuse loads reports it.
_NUMPY = {
    DataType.FLOAT32: np.dtype(np.float32),
    DataType.INT64: np.dtype(np.int64),
    DataType.INT32: np.dtype(np.int32),
    DataType.UINT8: np.dtype(np.uint8),
    DataType.INT8: np.dtype(np.int8),
    DataType.FLOAT16: np.dtype(np.float16),
    DataType.BOOL: np.dtype(np.bool_),
    DataType.FLOAT64: np.dtype(np.float64),
}
_DATA_TYPE = {dtype: member for member, dtype in _NUMPY.items()}
_BYTES = {**{member: dtype.itemsize for member, dtype in _NUMPY.items()}, DataType.BFLOAT16: 2}


def data_type(dtype: np.dtype) -> DataType | None:
    """The DataType of a numpy dtype, or None for one Paddle Inference has no type for."""
    return _DATA_TYPE.get(np.dtype(dtype))


def numpy_dtype(member: DataType) -> np.dtype:
    """The numpy dtype of a DataType.

    Raises:
        TypeError: ``member`` is not a DataType, or is BFLOAT16 (numpy has no such type).
    """
    if not isinstance(member, DataType):
        raise TypeError(f"expected a paddle.inference.DataType, received {type(member).__name__} {member!r}")
    if member not in _NUMPY:
        raise TypeError(f"{member.name} has no numpy type; use FLOAT16 or FLOAT32")
    return _NUMPY[member]


def get_num_bytes_of_data_type(dtype: DataType) -> int:
    """Bytes per element of ``dtype``.

    Raises:
        TypeError: ``dtype`` is not a DataType (Paddle's error type).
    """
    if not isinstance(dtype, DataType):
        raise TypeError(f"get_num_bytes_of_data_type takes a DataType, received {type(dtype).__name__} {dtype!r}")
    return _BYTES[dtype]


class Tensor:
    """An input (filled by the caller) or output (filled by ``run``) of a Predictor.

    The data lives in ``store``, the predictor's table of its inputs' (or its
    outputs') arrays by name, so the predictor reads and fills it directly. As
    in Paddle, a tensor without data has shape ``[0]`` (or the one ``reshape``
    declared) and type ``FLOAT32``.
    """

    def __init__(self, name: str, store: dict[str, np.ndarray]):
        self.name = name
        self._store = store
        self._shape = [0]
        self._lod: list[list[int]] = []
        self._shared: shared_memory.SharedMemory | None = None

    @property
    def _data(self) -> np.ndarray | None:
        return self._store.get(self.name)

    def reshape(self, shape: list[int] | tuple[int, ...] | int) -> None:
        """Declare the shape the tensor has until data arrives (``copy_from_cpu`` takes its data's shape)."""
        self._shape = [int(shape)] if isinstance(shape, int) else [int(d) for d in shape]

    def copy_from_cpu(self, data: np.ndarray) -> None:
        """Copy ``data`` into the tensor.

        Raises:
            TypeError: ``data`` is not a numpy array of one of DataType's types (Paddle's error type).
        """
        self._put(np.array(_checked_array(data, "copy_from_cpu"), copy=True, order="C"))

    def share_external_data(self, data: Any) -> None:
        """Use ``data`` (a paddle.Tensor, or a numpy array) as the tensor's memory, without a copy.

        Raises:
            TypeError: ``data`` is neither (Paddle's error type).
        """
        if type(data).__module__.startswith("paddle"):
            data = data.numpy()
        self._put(_checked_array(data, "share_external_data"))

    def share_external_data_by_ptr_name(self, data: str, shape: list[int], dtype: int, place: int) -> None:
        """Use the shared-memory block named ``data`` (POSIX shared memory, as ``multiprocessing.shared_memory``
        creates it) as the tensor's memory, without a copy: ``shape`` elements of DataType ``dtype``.

        Raises:
            ValueError: ``place`` is not the CPU, or the block is smaller than the tensor.
            FileNotFoundError: no block of that name exists.
        """
        if PlaceType(place) is not PlaceType.CPU:
            raise ValueError(f"tensor {self.name!r}: shared memory lives on the CPU, received place "
                             f"{PlaceType(place).name}")
        dtype_ = numpy_dtype(DataType(dtype))
        block = shared_memory.SharedMemory(name=data)
        # Attaching registers the block with this process's resource tracker, which would unlink the
        # owner's block when this process exits; the owner manages its lifetime.
        resource_tracker.unregister(block._name, "shared_memory")
        count = int(np.prod(shape, dtype=np.int64))
        if count * dtype_.itemsize > block.size:
            block.close()
            raise ValueError(f"tensor {self.name!r}: shared memory {data!r} holds {block.size} bytes; "
                             f"shape {list(shape)} of {DataType(dtype).name} needs {count * dtype_.itemsize}")
        if self._shared is not None:
            self._shared.close()
        self._shared = block
        self._put(np.ndarray(tuple(shape), dtype_, buffer=block.buf))

    def _put(self, array: np.ndarray) -> None:
        self._store[self.name] = array
        self._shape = list(array.shape)

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
        return DataType.FLOAT32 if self._data is None else data_type(self._data.dtype)

    def lod(self) -> list[list[int]]:
        return [list(level) for level in self._lod]

    def set_lod(self, lod: list[list[int]]) -> None:
        """Kept and returned by ``lod()``; ONNX models have no level-of-detail information to use it."""
        self._lod = [list(level) for level in lod]


def _checked_array(data: Any, method: str) -> np.ndarray:
    if not isinstance(data, np.ndarray):
        raise TypeError(
            f"In {method}, we only support numpy ndarray data type; received {type(data).__name__}. "
            "Hint: wrap it with numpy.asarray(data, dtype=...)"
        )
    if data_type(data.dtype) is None:
        names = ", ".join(str(d) for d in _NUMPY.values())
        raise TypeError(f"In {method}, the array's dtype {data.dtype} is not one Paddle Inference carries ({names})")
    return data
