"""The two Ray Serve deployments of a catalog.

``Ingress`` runs popfuse's own KServe v2 application (``server.http.create_app``), and its gRPC servicer
(``server.grpc.InferenceServicer``) behind Ray Serve's gRPC proxy, over one data plane whose repository is
the catalog's (``remote.CatalogRepository``): it checks each request against its model and forwards it to
``Artifacts`` with ``multiplexed_model_id`` set to the model's artifact. ``Artifacts`` replicas hold
artifacts within their memory budget (``host.ArtifactHost``) and run their models.

Routing to the replica that holds an artifact is Ray Serve's own multiplexed routing, sticky per model id:
a request goes to a replica that has reported the id, else to one holding the fewest, and spills to another
when those are busy. Replicas report their ids through ``record_request_routing_info`` on the Serve
controller, the call ``@serve.multiplexed`` makes. popfuse makes that call itself (``_report``), each time
the set of artifacts a replica routes for changes, because ``@serve.multiplexed`` evicts by count, may
evict a model with requests in flight, and loses what it evicted when a load fails. The call is not in Ray's
public API; the ``ray`` extra pins Ray's minor version for it, and the test suite checks that routing stays
sticky.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any, NoReturn

import grpc
import numpy as np
from google.protobuf import message_factory
from ray import serve
from ray.exceptions import RayActorError, RayTaskError
from ray.serve import metrics
from ray.serve._private.common import RequestRoutingInfo
from ray.serve.context import _get_global_client
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError, ReplicaUnavailableError
from ray.serve.grpc_util import RayServegRPCContext
from ray.serve.handle import DeploymentHandle
from tritonclient.grpc import service_pb2

from ..errors import BackendError, PopfuseError
from ..server.access import Restrictions
from ..server.dataplane import DataPlane
from ..server.errors import OverloadedError, UnavailableError
from ..server.grpc import InferenceServicer
from ..server.http import create_app
from ..server.model import Execution
from ..server.settings import ServerSettings
from .catalog import Catalog
from .grpc_service import register_message_modules
from .host import ArtifactHost
from .remote import CatalogRepository

log = logging.getLogger(__name__)

#: Load latency histogram boundaries, in seconds.
LOAD_SECONDS = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0]
#: How often a replica sets its gauges again.
GAUGE_PERIOD_S = 1.0
#: Serve logs one line per request unless told not to: at thousands of requests a second, that is the cost.
QUIET = {"enable_access_log": False}
_SERVICE = service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]


class _ReplicaListener:
    """Reports a replica's routing to the Serve controller, and its residency as Ray metrics.

    Ray Serve tags every metric of a replica with its application, deployment and replica id; Ray exports
    them in Prometheus form from each node (as ``ray_popfuse_…``).
    """

    def __init__(self, budget: int):
        self._replica = serve.get_replica_context().replica_id
        self._loads = metrics.Counter("popfuse_artifact_loads", description="Artifacts loaded by this replica.",
                                      tag_keys=("artifact",))
        self._evictions = metrics.Counter("popfuse_artifact_evictions",
                                          description="Artifacts evicted to stay within the memory budget.",
                                          tag_keys=("artifact",))
        self._failures = metrics.Counter("popfuse_artifact_load_failures",
                                         description="Artifact loads that failed (the replica kept what it had).",
                                         tag_keys=("artifact",))
        self._latency = metrics.Histogram("popfuse_artifact_load_seconds", description="Time to load an artifact.",
                                          boundaries=LOAD_SECONDS, tag_keys=("artifact",))
        self._bytes = metrics.Gauge("popfuse_resident_bytes", description="Artifact bytes this replica holds.")
        self._budget = metrics.Gauge("popfuse_memory_budget_bytes", description="Artifact bytes this replica may hold.")
        self._budget_bytes = budget
        self._resident_bytes = 0
        self.refresh()

    def routed(self, names: list[str]) -> None:
        _report(self._replica, names)

    def loaded(self, name: str, size: int, seconds: float) -> None:
        self._loads.inc(tags={"artifact": name})
        self._latency.observe(seconds, tags={"artifact": name})
        self._set_bytes(self._resident_bytes + size)

    def evicted(self, name: str, size: int) -> None:
        self._evictions.inc(tags={"artifact": name})
        self._set_bytes(self._resident_bytes - size)

    def failed(self, name: str, error: BaseException) -> None:
        self._failures.inc(tags={"artifact": name})

    def _set_bytes(self, resident: int) -> None:
        self._resident_bytes = resident
        self.refresh()

    def refresh(self) -> None:
        """Set the gauges again: Ray exports a gauge from the values set since the replica's last report."""
        self._bytes.set(self._resident_bytes)
        self._budget.set(self._budget_bytes)


def _report(replica, names: list[str]) -> None:
    """Tell the Serve controller which multiplexed model ids (artifacts) to route to ``replica``."""
    try:
        _get_global_client().record_request_routing_info(
            RequestRoutingInfo(replica_id=replica, multiplexed_model_ids=names))
    except Exception as e:  # routing degrades to any replica; requests still succeed there
        log.warning("could not report this replica's artifacts to the Serve controller: %s", e)


@serve.deployment(name="Artifacts", logging_config=QUIET)
class Artifacts:
    """A replica holding artifacts within its memory budget; requests name their artifact as the
    multiplexed model id."""

    async def __init__(self, catalog: Catalog):
        self._listener = _ReplicaListener(catalog.replicas.memory_budget)
        self.host = ArtifactHost(catalog, self._listener)
        self._gauges = asyncio.get_running_loop().create_task(self._refresh_gauges())

    async def _refresh_gauges(self) -> None:
        while True:  # a gauge not set since Ray's last export of metrics is not exported again
            await asyncio.sleep(GAUGE_PERIOD_S)
            self._listener.refresh()

    async def infer(self, model: str, inputs: dict[str, np.ndarray]) -> Execution:
        """Run one checked request for ``model`` of the request's artifact."""
        return await self.host.infer(serve.get_multiplexed_model_id(), model, inputs)

    async def load(self) -> list[str]:
        """Hold the request's artifact; returns its models."""
        return await self.host.load(serve.get_multiplexed_model_id())

    async def __del__(self):
        self._gauges.cancel()
        await self.host.close()


class _Aborted(Exception):
    """The servicer aborted the call; its status is set on Ray Serve's gRPC context."""


class _ProxyContext:
    """Ray Serve's gRPC context as ``InferenceServicer`` uses a ``grpc.aio`` one.

    Ray's gRPC proxy answers with the code and details set on its context, which has no ``abort``: here
    ``abort`` sets them and raises, as ``grpc.aio``'s does.
    """

    def __init__(self, context: RayServegRPCContext):
        self._context = context

    def invocation_metadata(self) -> list[tuple[str, str]]:
        return self._context.invocation_metadata()

    async def abort(self, code: grpc.StatusCode, details: str) -> NoReturn:
        self._context.set_code(code)
        self._context.set_details(details)
        raise _Aborted(details)


def _empty_answer(rpc: str) -> Any:
    """An empty message of ``rpc``'s answer type."""
    return message_factory.GetMessageClass(_SERVICE.methods_by_name[rpc].output_type)()


def _unary(rpc: str) -> Callable:
    """The ``Ingress`` method Ray Serve's gRPC proxy calls for ``rpc``: the servicer's, over Ray's context.
    (Ray pickles the class with its methods: they hold the RPC's name, never a protobuf class.)"""

    async def call(self: Ingress, request: Any, grpc_context: RayServegRPCContext) -> Any:
        try:
            return await getattr(self.servicer, rpc)(request, _ProxyContext(grpc_context))
        except _Aborted:  # the proxy sends the code and details set on the context, and not this message
            return _empty_answer(rpc)

    call.__name__ = call.__qualname__ = rpc
    return call


def _streaming(rpc: str) -> Callable:
    """The ``Ingress`` method for the bidirectional stream ``rpc``: Ray Serve's gRPC proxy sends the requests
    as they arrive and each answer as it is yielded. A call the servicer aborts ends with an error that Ray
    answers with the code set on the context."""

    async def call(self: Ingress, requests: AsyncIterator, grpc_context: RayServegRPCContext) -> AsyncIterator:
        async for reply in getattr(self.servicer, rpc)(requests, _ProxyContext(grpc_context)):
            yield reply

    call.__name__ = call.__qualname__ = rpc
    return call


@serve.deployment(name="Ingress", logging_config=QUIET)
@serve.ingress()
class Ingress:
    """popfuse's KServe v2 application and gRPC servicer over the catalog's models, each request forwarded to
    a replica that holds its artifact. HTTP comes through Ray Serve's HTTP proxy; gRPC through its gRPC
    proxy (``grpc_service.SERVICER_FUNCTION`` registered), which calls the method named after each RPC."""

    def __init__(self, catalog: Catalog, artifacts: DeploymentHandle):
        self._handles = {name: artifacts.options(multiplexed_model_id=name) for name in catalog.artifacts}
        ingress = catalog.ingress
        settings = ServerSettings(max_pending=ingress.max_pending, max_body_bytes=ingress.max_body_bytes, workers=1,
                                  http_restricted=ingress.http_restricted, grpc_restricted=ingress.grpc_restricted)
        self.dataplane = DataPlane(settings, lambda attach: CatalogRepository(catalog, self._forward, attach,
                                                                              self._warm))
        self.servicer = InferenceServicer(self.dataplane, Restrictions(settings.grpc_restricted))
        register_message_modules()  # the requests Ray's gRPC proxy pickles unpickle here

    def __serve_build_asgi_app__(self):
        return create_app(self.dataplane)

    # Triton's GRPCInferenceService, one method per RPC (tests check that none is missing).
    ServerLive = _unary("ServerLive")
    ServerReady = _unary("ServerReady")
    ModelReady = _unary("ModelReady")
    ServerMetadata = _unary("ServerMetadata")
    ModelMetadata = _unary("ModelMetadata")
    ModelInfer = _unary("ModelInfer")
    ModelStreamInfer = _streaming("ModelStreamInfer")
    ModelConfig = _unary("ModelConfig")
    ModelStatistics = _unary("ModelStatistics")
    RepositoryIndex = _unary("RepositoryIndex")
    RepositoryModelLoad = _unary("RepositoryModelLoad")
    RepositoryModelUnload = _unary("RepositoryModelUnload")
    SystemSharedMemoryStatus = _unary("SystemSharedMemoryStatus")
    SystemSharedMemoryRegister = _unary("SystemSharedMemoryRegister")
    SystemSharedMemoryUnregister = _unary("SystemSharedMemoryUnregister")
    CudaSharedMemoryStatus = _unary("CudaSharedMemoryStatus")
    CudaSharedMemoryRegister = _unary("CudaSharedMemoryRegister")
    CudaSharedMemoryUnregister = _unary("CudaSharedMemoryUnregister")
    TraceSetting = _unary("TraceSetting")
    LogSettings = _unary("LogSettings")

    async def _forward(self, artifact: str, model: str, inputs: dict[str, np.ndarray]) -> Execution:
        try:
            return await self._handles[artifact].infer.remote(model, inputs)
        except Exception as e:
            raise _domain_error(e, artifact) from e

    def _warm(self, artifact: str) -> list[str]:
        try:
            return self._handles[artifact].load.remote().result()
        except Exception as e:
            raise _domain_error(e, artifact) from e


def _domain_error(e: Exception, artifact: str) -> Exception:
    """A replica's error as the data plane's: its own error as raised there, Ray's failures as 503s."""
    if isinstance(e, RayTaskError):
        cause = e.cause
        if isinstance(cause, PopfuseError):
            return cause
        return BackendError(f"artifact {artifact!r}: the replica failed: {type(cause).__name__}: {cause}")
    if isinstance(e, (RayActorError, ReplicaUnavailableError)):  # ActorDiedError, ActorUnavailableError
        return UnavailableError(f"the replica running artifact {artifact!r} stopped during the request; retry")
    if isinstance(e, BackPressureError):
        return OverloadedError(f"every replica for artifact {artifact!r} is busy and the queue is full; retry later")
    if isinstance(e, DeploymentUnavailableError):
        return UnavailableError(f"no replica can take artifact {artifact!r} now; retry")
    return e
