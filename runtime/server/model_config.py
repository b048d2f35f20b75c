"""A served model's configuration in Triton's model-configuration schema (``model_config.proto``).

Triton's tools read it before they send a request: ``perf_analyzer`` takes the
inputs' types and dims from it, and whether the model batches. The HTTP
adapter returns this document as JSON (``GET /v2/models/{m}/config``); the gRPC
adapter parses the same document into a ``ModelConfig`` message, so both
transports say the same thing.

As in Triton, ``max_batch_size`` is above 0 only when the server batches the
model's requests (dynamic batching on); the dims then leave out the batch
dimension. Otherwise ``max_batch_size`` is 0 and the dims are the full shape
(-1: any size).
"""

from __future__ import annotations

from ..dtypes import kserve_from_numpy
from .model import Model, TensorSpec

#: Triton's ``backend`` field for every model this server serves.
BACKEND = "popfuse"


def data_type(spec: TensorSpec) -> str:
    """Triton's configuration type of a tensor (``TYPE_FP32``): ``TYPE_`` and its KServe datatype."""
    return f"TYPE_{kserve_from_numpy(spec.dtype)}"


def model_config(model: Model) -> dict:
    """``model``'s configuration, as Triton's HTTP endpoint returns it (proto field names, numbers as numbers)."""
    batching = model.batching
    max_batch_size = batching.max_batch_size if batching is not None else 0
    skip = 1 if max_batch_size else 0

    def tensor(spec: TensorSpec) -> dict:
        return {"name": spec.name, "data_type": data_type(spec), "dims": list(spec.shape[skip:])}

    config = {
        "name": model.name,
        "platform": model.platform,
        "backend": BACKEND,
        "version_policy": {"latest": {"num_versions": 1}},
        "max_batch_size": max_batch_size,
        "input": [{**tensor(s), "format": "FORMAT_NONE", "is_shape_tensor": False, "allow_ragged_batch": False,
                   "optional": False} for s in model.inputs],
        "output": [{**tensor(s), "label_filename": "", "is_shape_tensor": False} for s in model.outputs],
        "instance_group": [{"name": model.name, "kind": "KIND_CPU", "count": 1}],
        "parameters": {"artifact": {"string_value": model.artifact}},
    }
    if batching is not None:
        config["dynamic_batching"] = {"max_queue_delay_microseconds": batching.max_queue_delay_us}
    return config
