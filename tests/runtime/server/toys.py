"""Purpose-named toy models for the data plane's tests, as MLServer's suite has them: real classes with
the BlockingModel interface, small enough to say exactly what a request did."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np

from popfuse.runtime.errors import BackendError, ExecutionError
from popfuse.runtime.server.model import Execution, RemoteModel, TensorSpec


class SumModel:
    """O = X summed over its last dimension, per row: batchable on dimension 0. Counts its executions."""

    platform = "toy"

    def __init__(self, name: str = "sum", width: int = 4):
        self.name = self.artifact = name
        self.inputs = [TensorSpec("X", np.dtype(np.float32), (-1, width))]
        self.outputs = [TensorSpec("O", np.dtype(np.float32), (-1,))]
        self.executions: list[int] = []  # the rows of each execution
        self._lock = threading.Lock()

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with self._lock:
            self.executions.append(len(inputs["X"]))
        return {"O": inputs["X"].sum(axis=1)}


class SlowModel(SumModel):
    """A SumModel that takes ``seconds`` per execution."""

    def __init__(self, name: str = "slow", seconds: float = 0.2):
        super().__init__(name)
        self.seconds = seconds

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        time.sleep(self.seconds)
        return super().predict(inputs)


class ErrorModel(SumModel):
    """Refuses rows whose first value is negative (the caller's fault); fails in its engine on NaN."""

    def __init__(self, name: str = "error"):
        super().__init__(name)

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = inputs["X"]
        if np.isnan(x).any():
            raise BackendError("the engine lost its device")
        if (x[:, 0] < 0).any():
            raise ExecutionError("a negative first value is out of this model's domain")
        return super().predict(inputs)


class RemoteSum(RemoteModel):
    """A SumModel run elsewhere (a thread of its own standing for another process): reports the rows it was
    sent and fixed queue and compute times, as a replica reports its own."""

    platform = "toy"

    def __init__(self, name: str = "remote"):
        self.local = SumModel(name)
        self.name = self.artifact = name
        self.inputs, self.outputs = self.local.inputs, self.local.outputs

    async def run(self, inputs: dict[str, np.ndarray]) -> Execution:
        outputs = await asyncio.to_thread(self.local.predict, inputs)
        return Execution(outputs, queue_ns=1_000, compute_ns=5_000)
