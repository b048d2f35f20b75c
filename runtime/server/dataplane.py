"""The data plane: inference, metadata, statistics and repository control, with no HTTP in it.

It admits a bounded number of requests (more raise OverloadedError), checks
each request against its model, and runs it on a thread pool, through the
model's batcher when batching is on.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time

from .batching import Batcher
from .errors import BadRequestError, OverloadedError, UnavailableError
from .model import SubgraphModel
from .protocol import InferRequest, InferResponse
from .repository import Repository
from .settings import ServerSettings
from .stats import ModelStats

SERVER_NAME = "popfuse"
SERVER_VERSION = "0.1.0"
EXTENSIONS = ["binary_tensor_data", "model_repository", "statistics", "metrics"]


class DataPlane:
    """Everything the server does, callable without a network."""

    def __init__(self, repository: Repository, settings: ServerSettings):
        self.repository = repository
        self.settings = settings
        self.stats: dict[str, ModelStats] = {}
        self._executor = concurrent.futures.ThreadPoolExecutor(settings.workers, thread_name_prefix="popfuse-infer")
        self._batchers: dict[str, Batcher] = {}
        self._pending = 0
        self._closing = False

    # -- health and metadata ------------------------------------------------------------

    def live(self) -> bool:
        return True

    def ready(self) -> bool:
        """Not shutting down, and no artifact failed to load (one unloaded on purpose is fine)."""
        return not self._closing and all(
            e["state"] == "READY" or e["reason"] == "unloaded" for e in self.repository.index() if "models" in e
        )

    def server_metadata(self) -> dict:
        return {"name": SERVER_NAME, "version": SERVER_VERSION, "extensions": EXTENSIONS}

    def model_metadata(self, name: str) -> dict:
        return self.repository.get(name).metadata()

    def model_ready(self, name: str) -> bool:
        self.repository.get(name)
        return not self._closing

    def statistics(self, name: str | None = None) -> dict:
        if name is not None:
            self.repository.get(name)
            names = [name]
        else:
            names = [m.name for m in self.repository.models()]
        return {"model_stats": [self._stats_for(n).to_json() for n in names]}

    # -- inference --------------------------------------------------------------------------

    async def infer(self, name: str, request: InferRequest) -> InferResponse:
        """Run one request on model ``name``."""
        if self._closing:
            raise UnavailableError("the server is shutting down")
        model = self.repository.get(name)
        stats = self._stats_for(name)
        start = time.perf_counter_ns()
        try:
            model.check(request.inputs)
            wanted = self._outputs(model, request)
            if self._pending >= self.settings.max_pending:
                raise OverloadedError(
                    f"{self._pending} requests are queued or running, the limit is {self.settings.max_pending}; "
                    "retry later"
                )
            self._pending += 1
            try:
                outputs = await self._run(model, request.inputs, stats)
            finally:
                self._pending -= 1
        except Exception:
            stats.request(False, time.perf_counter_ns() - start)
            raise
        stats.request(True, time.perf_counter_ns() - start)
        return InferResponse(model_name=name, outputs={n: outputs[n] for n in wanted}, id=request.id)

    def _outputs(self, model: SubgraphModel, request: InferRequest) -> list[str]:
        names = [s.name for s in model.outputs]
        if request.outputs is None:
            return names
        for wanted in request.outputs:
            if wanted not in names:
                raise BadRequestError(f"model {model.name!r} has no output {wanted!r}; its outputs are {', '.join(names)}")
        return request.outputs

    async def _run(self, model: SubgraphModel, inputs: dict, stats: ModelStats) -> dict:
        config = self.settings.batching_for(model.name)
        if config.enabled and model.batchable:
            return await self._batcher(model, config.max_batch_size, config.max_queue_delay_us, stats).submit(inputs)
        queued = time.perf_counter_ns()

        def execute():
            start = time.perf_counter_ns()
            outputs = model.predict(inputs)
            rows = next(iter(inputs.values())).shape[0] if model.batchable else 1
            stats.execution(1, rows, start - queued, time.perf_counter_ns() - start)
            return outputs

        return await asyncio.get_running_loop().run_in_executor(self._executor, execute)

    def _batcher(self, model: SubgraphModel, size: int, delay_us: int, stats: ModelStats) -> Batcher:
        batcher = self._batchers.get(model.name)
        if batcher is None or batcher.model is not model:  # first request, or the artifact was reloaded
            if batcher is not None:
                asyncio.get_running_loop().create_task(batcher.close())
            batcher = Batcher(model, size, delay_us / 1e6, self._executor, stats,
                              concurrency=max(1, self.settings.workers))
            self._batchers[model.name] = batcher
        return batcher

    def _stats_for(self, name: str) -> ModelStats:
        stats = self.stats.get(name)
        if stats is None:
            stats = self.stats.setdefault(name, ModelStats(name))
        return stats

    # -- repository ------------------------------------------------------------------------

    def load_now(self, artifact: str) -> list[str]:
        """Load (or reload) an artifact, blocking; returns its models' names."""
        models = self.repository.load(artifact)
        for name in models:
            self._stats_for(name)
        return models

    async def load(self, artifact: str) -> list[str]:
        """``load_now`` on a thread, so requests to other models go on meanwhile."""
        return await asyncio.to_thread(self.load_now, artifact)

    async def unload(self, artifact: str) -> None:
        await asyncio.to_thread(self.repository.unload, artifact)

    async def close(self) -> None:
        """Stop intake; let queued batches run; release the threads."""
        self._closing = True
        await asyncio.gather(*(b.close() for b in self._batchers.values()), return_exceptions=True)
        self._executor.shutdown(wait=True)
