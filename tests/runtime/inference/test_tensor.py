"""Tensor handles and Paddle Inference's enums: Paddle 3.3's values, checks and error types."""

from __future__ import annotations

from multiprocessing import resource_tracker, shared_memory

import numpy as np
import pytest

from popfuse.runtime import inference as paddle_infer
from popfuse.runtime.inference.tensor import Tensor

# Paddle 3.3's members and values (paddle.inference.DataType.__members__, PlaceType, PrecisionType).
PADDLE_DATA_TYPES = {"FLOAT32": 0, "INT64": 1, "INT32": 2, "UINT8": 3, "INT8": 4, "FLOAT16": 5, "BOOL": 6,
                     "FLOAT64": 7, "BFLOAT16": 8}
PADDLE_PLACES = {"UNK": -1, "CPU": 0, "GPU": 1, "XPU": 2, "CUSTOM": 4}
PADDLE_PRECISIONS = {"Float32": 0, "Int8": 1, "Half": 2, "Bfloat16": 3}


def test_enums_have_paddles_members_and_values():
    assert {m.name: m.value for m in paddle_infer.DataType} == PADDLE_DATA_TYPES
    assert {m.name: m.value for m in paddle_infer.PlaceType} == PADDLE_PLACES
    assert {m.name: m.value for m in paddle_infer.PrecisionType} == PADDLE_PRECISIONS
    assert paddle_infer.Config.Precision is paddle_infer.PrecisionType and paddle_infer.Config.Half == 2


def test_bytes_of_each_data_type():
    sizes = {m.name: paddle_infer.get_num_bytes_of_data_type(m) for m in paddle_infer.DataType}
    assert sizes == {"FLOAT32": 4, "INT64": 8, "INT32": 4, "UINT8": 1, "INT8": 1, "FLOAT16": 2, "BOOL": 1,
                     "FLOAT64": 8, "BFLOAT16": 2}
    with pytest.raises(TypeError, match="takes a DataType"):
        paddle_infer.get_num_bytes_of_data_type(0)


def test_a_tensor_without_data_is_empty_float32_as_in_paddle():
    tensor = Tensor("x", {})
    assert tensor.shape() == [0] and tensor.type() == paddle_infer.DataType.FLOAT32
    tensor.reshape([2, 4])
    assert tensor.shape() == [2, 4]
    tensor.copy_from_cpu(np.arange(3, dtype=np.int64))  # the data's shape wins, as in Paddle
    assert tensor.shape() == [3] and tensor.type() == paddle_infer.DataType.INT64


@pytest.mark.parametrize("data", [[[1.0, 2.0]], np.float32(1.0), np.array([["a", "b"]]), np.array([1 + 2j]),
                                  np.array([1], np.uint16), "x"])
def test_copy_from_cpu_refuses_what_paddle_refuses_with_type_error(data):
    with pytest.raises(TypeError, match="copy_from_cpu"):
        Tensor("x", {}).copy_from_cpu(data)


def test_copy_from_cpu_copies_and_share_external_data_does_not():
    store: dict[str, np.ndarray] = {}
    tensor, data = Tensor("x", store), np.zeros((2, 2), np.float32)
    tensor.copy_from_cpu(data)
    data[0, 0] = 5
    assert store["x"][0, 0] == 0
    tensor.share_external_data(data)
    assert store["x"] is data
    with pytest.raises(TypeError, match="share_external_data"):
        tensor.share_external_data([1.0])


def test_share_external_data_by_ptr_name_maps_a_shared_memory_block():
    block = shared_memory.SharedMemory(create=True, size=64)
    try:
        owner = np.ndarray((2, 3), np.float32, buffer=block.buf)
        owner[:] = np.arange(6).reshape(2, 3)
        store: dict[str, np.ndarray] = {}
        tensor = Tensor("x", store)
        tensor.share_external_data_by_ptr_name(block.name, [2, 3], int(paddle_infer.DataType.FLOAT32),
                                               int(paddle_infer.PlaceType.CPU))
        owner[1, 2] = 42  # no copy: the tensor sees the owner's writes
        assert tensor.shape() == [2, 3] and store["x"][1, 2] == 42
        with pytest.raises(ValueError, match="holds 64 bytes"):
            tensor.share_external_data_by_ptr_name(block.name, [100], int(paddle_infer.DataType.FLOAT32), 0)
        with pytest.raises(ValueError, match="on the CPU"):
            tensor.share_external_data_by_ptr_name(block.name, [2], 0, int(paddle_infer.PlaceType.GPU))
        with pytest.raises(FileNotFoundError):
            tensor.share_external_data_by_ptr_name("popfuse-no-such-block", [2], 0, 0)
        del owner, store, tensor
    finally:
        # The tensor's attach unregistered the block from this process's resource tracker, where this test
        # (unlike a real owner, in its own process) registered it too: register it again to unlink it.
        resource_tracker.register(block._name, "shared_memory")
        block.close()
        block.unlink()
