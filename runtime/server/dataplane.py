"""The data plane: inference, metadata, statistics and repository control, with no HTTP in it.

It admits a bounded number of requests (more raise OverloadedError), checks
each request against its model, and runs it on a thread pool, through the
model's batcher when batching is on.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from ..errors import BackendError, ExecutionError
from .batching import Batched
from .errors import BadRequestError, ModelControlError, ModelNotFoundError, OverloadedError, UnavailableError
from .model import BlockingModel, Forwarded, Model, RemoteModel, Threaded, batchable
from .model_config import model_config
from .protocol import InferRequest, InferResponse, brief
from .settings import ServerSettings
from .stats import ModelStats

SERVER_NAME = "popfuse"
SERVER_VERSION = "0.1.0"
EXTENSIONS = ["binary_tensor_data", "model_configuration", "model_repository", "statistics", "metrics"]

def _failure(error: Exception) -> str:
    """Triton's reason for a failed request (the ``reason`` label of ``nv_inference_request_failure``)."""
    if isinstance(error, OverloadedError):
        return "REJECTED"
    if isinstance(error, (ExecutionError, BackendError)):
        return "BACKEND"
    return "OTHER"


#: How a repository turns a model it loads into the model the data plane serves (``DataPlane.attach``).
Attach = Callable[[BlockingModel | RemoteModel], Model]


class ModelRepository(Protocol):
    """What the data plane needs of a repository."""

    def get(self, name: str) -> Model:
        """The model named ``name``; raises ModelNotFoundError."""
        ...

    def models(self) -> list[Model]:
        """Every model served now."""
        ...

    def index(self) -> list[dict]:
        """Triton's repository index."""
        ...

    def load(self, name: str) -> list[str]:
        """Load (or reload) an artifact, blocking; returns its models' names."""
        ...

    def unload(self, name: str) -> None:
        """Stop serving an artifact's models."""
        ...


class DataPlane:
    """Everything the server does, callable without a network.

    Args:
        settings: How the server runs.
        make_repository: Builds the repository, given how to attach a loaded model (``attach``).
    """

    def __init__(self, settings: ServerSettings, make_repository: Callable[[Attach], ModelRepository]):
        self.settings = settings
        self.stats: dict[str, ModelStats] = {}
        self._executor = concurrent.futures.ThreadPoolExecutor(settings.workers, thread_name_prefix="popfuse-infer")
        self._tasks: set[asyncio.Task] = set()
        self._pending = 0
        self._closing = False
        self.repository = make_repository(self.attach)

    def attach(self, model: BlockingModel | RemoteModel) -> Model:
        """``model`` as served: a remote model forwarded; a local one batched when its settings ask and its
        shapes allow, else one request per run."""
        stats = self._stats_for(model.name)
        if isinstance(model, RemoteModel):
            return Forwarded(model, stats)
        config = self.settings.batching_for(model.name)
        if config.enabled and batchable(model):
            return Batched(model, stats, self._executor, self.spawn, config.max_batch_size,
                           config.max_queue_delay_us / 1e6, concurrency=max(1, self.settings.workers))
        return Threaded(model, stats, self._executor)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task:
        """Start a task in the running loop, and keep it until it ends (``close`` waits for it)."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

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

    def model(self, name: str, version: str = "") -> Model:
        """Model ``name``, at ``version`` ("" for the latest; every model has one version, "1").

        Raises:
            ModelNotFoundError: no such model, or no such version of it.
        """
        model = self.repository.get(name)
        if version not in ("", "1"):
            raise ModelNotFoundError(f"model {name!r} has no version {brief(version)}; its only version is 1")
        return model

    def model_metadata(self, name: str, version: str = "") -> dict:
        return self.model(name, version).metadata()

    def model_config(self, name: str, version: str = "") -> dict:
        """The model's configuration in Triton's schema."""
        return model_config(self.model(name, version))

    def model_ready(self, name: str, version: str = "") -> bool:
        self.model(name, version)
        return not self._closing

    def statistics(self, name: str | None = None, version: str = "") -> dict:
        if name:
            names = [self.model(name, version).name]
        else:
            names = [m.name for m in self.repository.models()]
        return {"model_stats": [self._stats_for(n).to_json() for n in names]}

    # -- inference --------------------------------------------------------------------------

    async def infer(self, name: str, request: InferRequest, version: str = "") -> InferResponse:
        """Run one request on model ``name``."""
        if self._closing:
            raise UnavailableError("the server is shutting down")
        model = self.model(name, version)
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
            stats.pending += 1
            try:
                outputs = await model.infer(request.inputs)
            finally:
                self._pending -= 1
                stats.pending -= 1
        except asyncio.CancelledError:
            stats.request(time.perf_counter_ns() - start, "CANCELED")
            raise
        except Exception as e:
            stats.request(time.perf_counter_ns() - start, _failure(e))
            raise
        stats.request(time.perf_counter_ns() - start)
        return InferResponse(model_name=name, outputs={n: outputs[n] for n in wanted}, id=request.id)

    def _outputs(self, model: Model, request: InferRequest) -> list[str]:
        names = [s.name for s in model.outputs]
        if request.outputs is None:
            return names
        for wanted in request.outputs:
            if wanted not in names:
                raise BadRequestError(
                    f"model {model.name!r} has no output {wanted!r}; its outputs are {', '.join(names)}"
                )
        return request.outputs

    def _stats_for(self, name: str) -> ModelStats:
        stats = self.stats.get(name)
        if stats is None:
            stats = self.stats.setdefault(name, ModelStats(name))
        return stats

    # -- repository ------------------------------------------------------------------------

    def load_now(self, artifact: str) -> list[str]:
        """Load (or reload) an artifact, blocking; returns its models' names."""
        return self.repository.load(artifact)

    async def load(self, artifact: str) -> list[str]:
        """``load_now`` on a thread, so requests to other models go on meanwhile: a load over the API.

        Raises:
            ModelControlError: the server runs several worker processes.
        """
        self._check_model_control()
        return await asyncio.to_thread(self.load_now, artifact)

    async def unload(self, artifact: str) -> None:
        """Stop serving an artifact's models: an unload over the API.

        Raises:
            ModelControlError: the server runs several worker processes.
        """
        self._check_model_control()
        await asyncio.to_thread(self.repository.unload, artifact)

    def _check_model_control(self) -> None:
        # Each worker process has its own repository: a load would change the one worker that received it, and
        # the others would go on serving what they hold, so that the same request got different answers.
        processes = self.settings.worker_processes
        if processes > 1:
            # Triton's words for a server that does not take loads ("explicit model load / unload is not
            # allowed"), which its tools look for.
            raise ModelControlError(
                f"explicit model load / unload is not allowed: this server runs {processes} worker processes, "
                "and a load or unload would change only the one that received it; restart the server to serve "
                "other artifacts, or serve with --worker-processes 1 to load and unload over the API"
            )

    async def close(self) -> None:
        """Stop intake; let queued batches run; release the threads."""
        self._closing = True
        for model in self.repository.models():
            model.close()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self._executor.shutdown(wait=True)
