"""A served model's configuration in Triton's schema, which the gRPC ModelConfig message also parses."""

from __future__ import annotations

from google.protobuf import json_format
from tritonclient.grpc import model_config_pb2

from popfuse.runtime.server.dataplane import DataPlane
from popfuse.runtime.server.model_config import model_config
from popfuse.runtime.server.repository import FixedRepository
from popfuse.runtime.server.settings import BatchingConfig, ServerSettings
from tests.runtime.server.toys import SumModel


def _served(batching: BatchingConfig):
    settings = ServerSettings(default_batching=batching)
    return DataPlane(settings, lambda attach: FixedRepository([SumModel(width=3)], attach)).model("sum")


def test_a_batched_model_leaves_out_the_batch_dimension():
    config = model_config(_served(BatchingConfig(8, 500)))
    assert config["max_batch_size"] == 8 and config["dynamic_batching"] == {"max_queue_delay_microseconds": 500}
    assert config["input"][0] | {"dims": None} == {"name": "X", "data_type": "TYPE_FP32", "dims": None,
                                                    "format": "FORMAT_NONE", "is_shape_tensor": False,
                                                    "allow_ragged_batch": False, "optional": False}
    assert config["input"][0]["dims"] == [3] and config["output"][0]["dims"] == []
    message = json_format.ParseDict(config, model_config_pb2.ModelConfig())
    assert message.max_batch_size == 8 and message.input[0].data_type == model_config_pb2.TYPE_FP32


def test_an_unbatched_model_gives_its_full_shape():
    config = model_config(_served(BatchingConfig()))
    assert config["max_batch_size"] == 0 and "dynamic_batching" not in config
    assert config["input"][0]["dims"] == [-1, 3] and config["platform"] == "toy"
