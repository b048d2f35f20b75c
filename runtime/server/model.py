"""What the data plane serves: the ``Model`` protocol, and a fused artifact's subgraph as one.

Clients see a model's own input and output names (``x``), not the artifact's
anchors (``graph2/x``); the fusion map gives both. A model checks requests
against its declared dtypes and shapes before anything runs.

A ``BlockingModel`` (one with a blocking ``predict``) becomes a served ``Model`` when the
data plane attaches how it runs: on the thread pool (``Threaded``) or through
a batcher (``batching.Batched``). A ``RemoteModel`` runs in another process or
on another machine (a Ray Serve replica); attached, it is ``Forwarded``: checked
here, awaited there.
"""

from __future__ import annotations

import abc
import asyncio
import concurrent.futures
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np

from .. import metadata as md
from ..dtypes import kserve_from_numpy, numpy_from_popef
from ..errors import ExecutionError
from ..runner import Runner
from ..tensors import mismatch
from .errors import BadRequestError
from .stats import ModelStats

if TYPE_CHECKING:
    from .settings import BatchingConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TensorSpec:
    """A model input or output: client name, dtype and shape (-1: set per request)."""

    name: str
    dtype: np.dtype
    shape: tuple[int, ...]

    def metadata(self) -> dict:
        return {"name": self.name, "datatype": kserve_from_numpy(self.dtype), "shape": list(self.shape)}


def subgraph_specs(metadata: md.Metadata, sub: md.Subgraph) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """A fused model's inputs and outputs under its own names, from the artifact's records."""
    anchors = {a.name: a for a in metadata.anchors}

    def spec(anchor: str) -> TensorSpec:
        info = anchors[anchor].tensor_info
        return TensorSpec(sub.local_name(anchor), numpy_from_popef(info.data_type), info.shape)

    return [spec(a) for a in sub.inputs], [spec(a) for a in sub.outputs]


def platform(metadata: md.Metadata) -> str:
    """The platform a fused model reports in its metadata: ``popfuse_<backend>``."""
    return f"popfuse_{metadata.backend.name}"


class BlockingModel(Protocol):
    """A model that runs a request where it is called (blocking)."""

    name: str
    artifact: str
    platform: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Outputs by client name for inputs by client name; raises ExecutionError or BackendError."""
        ...


class Model(Protocol):
    """What the data plane serves."""

    name: str
    artifact: str
    platform: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    #: How its requests are batched, or None when each runs alone.
    batching: BatchingConfig | None

    def metadata(self) -> dict:
        """KServe v2 model metadata."""
        ...

    def check(self, inputs: dict[str, np.ndarray]) -> None:
        """Raise BadRequestError unless ``inputs`` are exactly this model's, with its dtypes and shapes."""
        ...

    async def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one checked request."""
        ...

    def close(self) -> None:
        """Stop taking requests; those already queued still run."""
        ...


class SubgraphModel:
    """Subgraph ``index`` of ``runner``'s artifact, as a BlockingModel named after the subgraph."""

    def __init__(self, artifact: str, runner: Runner, index: int):
        sub = runner.subgraphs[index]
        self.artifact = artifact
        self.name = sub.name
        self.platform = platform(runner.metadata)
        self.runner = runner
        self.inputs, self.outputs = subgraph_specs(runner.metadata, sub)
        self._feeds = [(s.name, a) for s, a in zip(self.inputs, sub.inputs)]
        self._fetches = [(s.name, a) for s, a in zip(self.outputs, sub.outputs)]
        self._index_feed = {runner.fusion_map.index_anchor: np.array([index], np.uint32)}

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the subgraph (blocking); inputs and outputs by client name.

        Raises:
            ExecutionError: the model refused the inputs; the message names tensors as the client does.
        """
        feeds = {anchor: inputs[name] for name, anchor in self._feeds}
        feeds.update(self._index_feed)
        try:
            results = self.runner.execute(feeds)
        except ExecutionError as e:
            message = str(e)
            for name, anchor in (*self._feeds, *self._fetches):
                message = message.replace(anchor, name)
            raise ExecutionError(message) from e
        return {name: results[anchor] for name, anchor in self._fetches}


def batchable(model: BlockingModel) -> bool:
    """Whether requests to ``model`` can be stacked on dimension 0 of every input and output."""
    return all(s.shape and s.shape[0] == -1 for s in (*model.inputs, *model.outputs))


def check_inputs(model: BlockingModel, inputs: dict[str, np.ndarray]) -> None:
    """Raise BadRequestError unless ``inputs`` are exactly ``model``'s, with its dtypes and shapes."""
    specs = {s.name: s for s in model.inputs}
    for name, array in inputs.items():
        spec = specs.get(name)
        if spec is None:
            raise BadRequestError(f"model {model.name!r} has no input {name!r}; its inputs are {', '.join(specs)}")
        problem = mismatch(array, spec.dtype, spec.shape, kserve_from_numpy)
        if problem:
            raise BadRequestError(f"model {model.name!r}, input {name!r}: {problem}")
    missing = [n for n in specs if n not in inputs]
    if missing:
        raise BadRequestError(f"model {model.name!r} needs input(s) {', '.join(missing)}")


#: Sizes tried, in turn, for every dynamic dimension when a model is warmed: 1, then one past the
#: kernel and window sizes of common vision and audio models, which refuse a length of 1.
WARM_SIZES = (1, 64)


def warm(model: BlockingModel) -> bool:
    """Run once on zeros, so the first request pays no first-run costs; returns whether a run succeeded.

    Dynamic dimensions take each of ``WARM_SIZES`` in turn. A model that refuses every one (it needs
    particular values, not zeros) is left cold, and one log line says why.
    """
    sizes = WARM_SIZES if any(d < 0 for s in model.inputs for d in s.shape) else WARM_SIZES[:1]
    for size in sizes:
        zeros = {s.name: np.zeros([d if d >= 0 else size for d in s.shape], s.dtype) for s in model.inputs}
        try:
            model.predict(zeros)
            return True
        except ExecutionError as e:
            problem = " ".join(str(e).split())
    tried = " or ".join(map(str, sizes))
    log.warning("model %r was not warmed (its first request pays the first-run costs): it rejects zeros with "
                "dynamic dimensions %s: %s", model.name, tried, problem)
    return False


class Served:
    """A BlockingModel's protocol face: metadata and request checks, shared by every way of running it."""

    def __init__(self, model: BlockingModel, stats: ModelStats):
        self.model, self.stats = model, stats
        self.name, self.artifact, self.platform = model.name, model.artifact, model.platform
        self.inputs, self.outputs = model.inputs, model.outputs
        self.batching: BatchingConfig | None = None

    def metadata(self) -> dict:
        return {
            "name": self.name,
            "versions": ["1"],
            "platform": self.platform,
            "inputs": [s.metadata() for s in self.inputs],
            "outputs": [s.metadata() for s in self.outputs],
        }

    def check(self, inputs: dict[str, np.ndarray]) -> None:
        check_inputs(self.model, inputs)

    def close(self) -> None:
        """Nothing is queued here."""


class Threaded(Served):
    """A BlockingModel served one request per execution, on the data plane's thread pool."""

    def __init__(self, model: BlockingModel, stats: ModelStats, executor: concurrent.futures.Executor):
        super().__init__(model, stats)
        self._executor = executor
        self._rows = batchable(model)

    async def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        queued = time.perf_counter_ns()

        def execute() -> dict[str, np.ndarray]:
            start = time.perf_counter_ns()
            outputs = self.model.predict(inputs)
            rows = next(iter(inputs.values())).shape[0] if self._rows else 1
            # One request per run: its inputs go to the model and its outputs come back as they are.
            self.stats.execution(1, rows, start - queued, 0, time.perf_counter_ns() - start, 0)
            return outputs

        return await asyncio.get_running_loop().run_in_executor(self._executor, execute)


@dataclass(frozen=True)
class Execution:
    """A remote run's outputs, and how long the request queued and computed where it ran."""

    outputs: dict[str, np.ndarray]
    queue_ns: int
    compute_ns: int


async def execute(executor: concurrent.futures.Executor, model: BlockingModel, inputs: dict[str, np.ndarray],
                  queued_ns: int) -> Execution:
    """Run ``model`` on ``executor`` and time it: what a process that runs models for others reports back.
    ``queued_ns`` is when the request arrived (``time.perf_counter_ns``)."""

    def run() -> tuple[dict[str, np.ndarray], int, int]:
        start = time.perf_counter_ns()
        outputs = model.predict(inputs)
        return outputs, start, time.perf_counter_ns()

    outputs, start, end = await asyncio.get_running_loop().run_in_executor(executor, run)
    return Execution(outputs, start - queued_ns, end - start)


class RemoteModel(abc.ABC):
    """A model that runs in another process or on another machine: its requests are awaited, never run here.

    Attributes:
        name, artifact, platform, inputs, outputs: As a ``BlockingModel``'s, known without the model loaded.
    """

    name: str
    artifact: str
    platform: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]

    @abc.abstractmethod
    async def run(self, inputs: dict[str, np.ndarray]) -> Execution:
        """Run one checked request where the model is; raises the errors a served model raises."""


class Forwarded(Served):
    """A RemoteModel served: requests are checked here, run there, and counted here with the remote times."""

    model: RemoteModel

    def __init__(self, model: RemoteModel, stats: ModelStats):
        super().__init__(model, stats)  # the same metadata as a BlockingModel's
        self._rows = batchable(model)

    async def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        execution = await self.model.run(inputs)
        rows = next(iter(inputs.values())).shape[0] if self._rows else 1
        # One request per run, as ``Threaded``'s: the remote compute is the model's run.
        self.stats.execution(1, rows, execution.queue_ns, 0, execution.compute_ns, 0)
        return execution.outputs
