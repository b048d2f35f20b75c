"""The serving baseline: one onnxruntime session per source model, behind popfuse's own HTTP stack.

Only the models differ from ``popfuse serve``: the data plane, batching and
HTTP adapter are the same, so the comparison measures fusion and nothing else.

    python -m popfuse.benchmarks.baseline_server --port 8000 --grpc-port 8001 NAME=model.onnx [NAME=model.onnx …]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from popfuse.runtime.backends import SessionOptions, resolve_target
from popfuse.runtime.server.dataplane import DataPlane
from popfuse.runtime.server.model import TensorSpec
from popfuse.runtime.server.repository import FixedRepository
from popfuse.runtime.server.serve import run
from popfuse.runtime.server.settings import BatchingConfig, ServerSettings


class SessionModel:
    """A plain onnxruntime session (fully optimised, as onnxruntime opens a model by default), as a
    blocking model."""

    platform = "onnxruntime_onnx"

    def __init__(self, name: str, path: str, threads: int | None):
        backend, device = resolve_target("onnxruntime-cpu")
        self.session = backend.open(Path(path).read_bytes(), (), device,
                                    SessionOptions(intra_op_num_threads=threads, optimize=True))
        self.name = self.artifact = name
        self.inputs = [TensorSpec(p.name, p.dtype, p.shape) for p in self.session.inputs]
        self.outputs = [TensorSpec(p.name, p.dtype, p.shape) for p in self.session.outputs]
        self._names = [s.name for s in self.outputs]

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(self._names, self.session.run(self._names, inputs)))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("models", nargs="+", help="NAME=path.onnx")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--grpc-port", type=int, default=None, help="also serve gRPC on this port")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--max-batch-size", type=int, default=0)
    parser.add_argument("--max-queue-delay-us", type=int, default=0)
    args = parser.parse_args(argv)
    models = [SessionModel(*spec.split("=", 1), args.threads) for spec in args.models]
    settings = ServerSettings(port=args.port, grpc_port=args.grpc_port, intra_op_num_threads=args.threads,
                              default_batching=BatchingConfig(args.max_batch_size, args.max_queue_delay_us))
    run(DataPlane(settings, lambda attach: FixedRepository(models, attach)), settings)


if __name__ == "__main__":
    main(sys.argv[1:])
