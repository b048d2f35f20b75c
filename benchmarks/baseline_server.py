"""The serving baseline: one onnxruntime session per source model, behind popfuse's own HTTP stack.

Only the models differ from ``popfuse serve``: the data plane, batching and
HTTP adapter are the same, so the comparison measures fusion and nothing else.

    python -m benchmarks.baseline_server --port 8001 NAME=model.onnx [NAME=model.onnx …]
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import onnxruntime as ort
import uvicorn

from runtime.dtypes import numpy_from_kserve
from runtime.server.dataplane import DataPlane
from runtime.server.errors import ModelNotFoundError
from runtime.server.http import create_app
from runtime.server.model import SubgraphModel, TensorSpec
from runtime.server.settings import BatchingConfig, ServerSettings

_ORT_TO_KSERVE = {"tensor(float)": "FP32", "tensor(float16)": "FP16", "tensor(int64)": "INT64",
                  "tensor(int32)": "INT32", "tensor(uint8)": "UINT8", "tensor(bool)": "BOOL"}


class SessionModel(SubgraphModel):
    """A plain onnxruntime session with the interface the data plane expects of a model."""

    def __init__(self, name: str, path: str, threads: int | None):
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.name = name
        self.artifact = name

        def spec(arg) -> TensorSpec:
            shape = tuple(d if isinstance(d, int) and d >= 0 else -1 for d in arg.shape)
            return TensorSpec(arg.name, arg.name, numpy_from_kserve(_ORT_TO_KSERVE[arg.type]), shape)

        self.inputs = [spec(a) for a in self.session.get_inputs()]
        self.outputs = [spec(a) for a in self.session.get_outputs()]
        self._inputs = {s.name: s for s in self.inputs}

    def metadata(self) -> dict:
        return {"name": self.name, "versions": ["1"], "platform": "onnxruntime_onnx",
                "inputs": [s.metadata() for s in self.inputs], "outputs": [s.metadata() for s in self.outputs]}

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip((s.name for s in self.outputs), self.session.run(None, inputs)))


class SessionRepository:
    """Fixed models; nothing to load or unload."""

    def __init__(self, models: list[SessionModel]):
        self._models = {m.name: m for m in models}

    def get(self, name: str) -> SessionModel:
        if name not in self._models:
            raise ModelNotFoundError(f"unknown model {name!r}")
        return self._models[name]

    def models(self) -> list[SessionModel]:
        return list(self._models.values())

    def index(self) -> list[dict]:
        return [{"name": n, "version": "1", "state": "READY", "reason": ""} for n in self._models]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("models", nargs="+", help="NAME=path.onnx")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--max-batch-size", type=int, default=0)
    parser.add_argument("--max-queue-delay-us", type=int, default=0)
    args = parser.parse_args(argv)
    models = [SessionModel(*spec.split("=", 1), args.threads) for spec in args.models]
    settings = ServerSettings(port=args.port, intra_op_num_threads=args.threads,
                              default_batching=BatchingConfig(args.max_batch_size, args.max_queue_delay_us))
    uvicorn.run(create_app(DataPlane(SessionRepository(models), settings)), host="127.0.0.1", port=args.port,
                log_level="warning", access_log=False)


if __name__ == "__main__":
    main(sys.argv[1:])
