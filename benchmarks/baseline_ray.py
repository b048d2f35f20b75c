"""The scale-out baseline: Ray Serve's own multiplexing of plain per-model onnxruntime sessions.

One multiplexed model id per source model; each replica keeps ``per_replica`` sessions
(``@serve.multiplexed(max_num_models_per_replica=…)``) and, asked for one more, unloads the least recently
used. In front of it, the same KServe v2 ingress as popfuse's (``create_app`` over a data plane of remote
models), so the comparison measures what holds and routes the models, and nothing else.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time

import numpy as np
from ray import serve
from ray.serve import Application
from ray.serve.handle import DeploymentHandle

from popfuse.runtime.scaleout.deployments import QUIET
from popfuse.runtime.server.dataplane import DataPlane
from popfuse.runtime.server.http import create_app
from popfuse.runtime.server.model import Execution, RemoteModel, TensorSpec, execute, warm
from popfuse.runtime.server.repository import FixedRepository
from popfuse.runtime.server.settings import ServerSettings

from .baseline_server import SessionModel


class SessionRemote(RemoteModel):
    """A source model served by the ``Sessions`` deployment, under its own name as the multiplexed id."""

    platform = "onnxruntime_onnx"

    def __init__(self, name: str, inputs: list[TensorSpec], outputs: list[TensorSpec], sessions: DeploymentHandle):
        self.name = self.artifact = name
        self.inputs, self.outputs = inputs, outputs
        self._handle = sessions.options(multiplexed_model_id=name)

    async def run(self, inputs: dict[str, np.ndarray]) -> Execution:
        return await self._handle.infer.remote(inputs)


@serve.deployment(name="Sessions", logging_config=QUIET)
class Sessions:
    """A replica holding up to ``per_replica`` plain sessions, by Ray's count-based LRU."""

    def __init__(self, sources: dict[str, str], per_replica: int, threads: int | None):
        executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="baseline-replica")
        self._executor = executor

        async def open_session(name: str) -> SessionModel:
            def load() -> SessionModel:
                model = SessionModel(name, sources[name], threads)
                warm(model)  # as popfuse warms every model it loads
                return model

            return await asyncio.get_running_loop().run_in_executor(executor, load)

        self._session = serve.multiplexed(max_num_models_per_replica=per_replica)(open_session)

    async def infer(self, inputs: dict[str, np.ndarray]) -> Execution:
        queued = time.perf_counter_ns()
        model = await self._session(serve.get_multiplexed_model_id())
        return await execute(self._executor, model, inputs, queued)


@serve.deployment(name="SessionIngress", logging_config=QUIET)
@serve.ingress()
class SessionIngress:
    """popfuse's KServe v2 application over the per-model sessions."""

    def __init__(self, specs: dict[str, tuple[list[TensorSpec], list[TensorSpec]]], sessions: DeploymentHandle):
        models = [SessionRemote(name, inputs, outputs, sessions) for name, (inputs, outputs) in specs.items()]
        self.dataplane = DataPlane(ServerSettings(workers=1), lambda attach: FixedRepository(models, attach))

    def __serve_build_asgi_app__(self):
        return create_app(self.dataplane)


def application(sources: dict[str, str], per_replica: int, threads: int | None, replicas: dict,
                ingress: dict) -> Application:
    """The baseline's two deployments: ``replicas`` and ``ingress`` are their Ray options."""
    specs = {}
    for name, path in sources.items():
        model = SessionModel(name, path, 1)
        specs[name] = (model.inputs, model.outputs)
    sessions = Sessions.options(**replicas).bind(sources, per_replica, threads)
    return SessionIngress.options(**ingress).bind(specs, sessions)
