"""Running the server: artifacts loaded into one data plane, served over HTTP and gRPC in one event loop.

HTTP runs on uvicorn with ``GuardedProtocol`` (bounded connections), gRPC on
``grpc.aio``. SIGTERM or SIGINT stops both: no new connections or calls,
in-flight requests finish (up to ``graceful_timeout_s``), batches run, and
``run`` returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import signal
import threading

import uvicorn

from ..config import RuntimeConfig
from .connections import GuardedProtocol
from .dataplane import DataPlane
from .http import create_app
from .repository import Artifacts, Repository
from .settings import ServerSettings

log = logging.getLogger(__name__)


def build(artifacts: Artifacts, settings: ServerSettings) -> DataPlane:
    """Open and warm every artifact; returns the data plane that serves them."""
    config = RuntimeConfig(validate_io_params=False, intra_op_num_threads=settings.intra_op_num_threads,
                           trusted_keys=settings.trusted_keys)
    dataplane = DataPlane(settings, lambda attach: Repository(artifacts, config, attach))
    for entry in dataplane.repository.index():
        dataplane.load_now(entry["name"])
    return dataplane


def uvicorn_config(app, settings: ServerSettings) -> uvicorn.Config:
    """uvicorn's configuration for ``app`` under ``settings``: bounded connections, quiet access log."""
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        http=GuardedProtocol.factory(settings),
        log_level="warning",
        timeout_graceful_shutdown=settings.graceful_timeout_s,
        access_log=False,
    )


class Server(uvicorn.Server):
    """uvicorn's server for ``dataplane``'s HTTP app, which also starts and stops its gRPC server (unless
    ``settings.grpc_port`` is None), and ends with status 0 once SIGTERM or SIGINT has drained it.

    uvicorn raises the signal again after its graceful shutdown, so a clean
    drain would end as "killed by SIGTERM" and look like a crash to the caller.
    ``run()`` runs it in a new event loop (uvloop where it is installed, as uvicorn picks; grpc.aio runs on
    any asyncio loop), ``serve()`` in the current one; set ``should_exit`` to stop it.
    """

    def __init__(self, dataplane: DataPlane, settings: ServerSettings):
        super().__init__(uvicorn_config(create_app(dataplane), settings))
        self.dataplane, self.settings = dataplane, settings
        self.grpc_server = None

    async def serve(self, sockets=None) -> None:
        if self.settings.grpc_port is not None:
            from .grpc import start_server

            self.grpc_server = await start_server(self.dataplane, self.settings)
            log.info("serving gRPC on %s:%d", self.settings.host, self.settings.grpc_port)
        log.info("serving HTTP on http://%s:%d", self.settings.host, self.settings.port)
        await super().serve(sockets)

    @contextlib.contextmanager
    def capture_signals(self):
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        original = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)

    async def shutdown(self, sockets=None) -> None:
        stopping = None
        if self.grpc_server is not None:
            stopping = asyncio.ensure_future(self.grpc_server.stop(self.config.timeout_graceful_shutdown))
        await super().shutdown(sockets)
        if stopping is not None:
            await stopping


def fit_open_files(settings: ServerSettings) -> None:
    """Raise this process's open-file limit (soft, up to the hard one) so that ``settings.max_connections``
    sockets fit, for HTTP and as many for gRPC."""
    connections = settings.max_connections * (1 if settings.grpc_port is None else 2)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = connections + 256  # the models' files, the gRPC server, the loop's own descriptors
    if soft != resource.RLIM_INFINITY and soft < wanted:
        new = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        if new < wanted:
            log.warning("at most %d files may be open in this process; --max-connections %d will not fit", new,
                        settings.max_connections)


def run(dataplane: DataPlane, settings: ServerSettings) -> None:
    """Serve ``dataplane`` over HTTP (and gRPC, unless ``settings.grpc_port`` is None) until SIGTERM or SIGINT,
    then finish in-flight requests and return.

    Raises:
        ServerConfigError: the gRPC port cannot be bound.
    """
    fit_open_files(settings)
    Server(dataplane, settings).run()


def serve(artifacts: Artifacts, settings: ServerSettings) -> None:
    """Serve ``artifacts`` until SIGTERM or SIGINT, then finish in-flight requests and return: in this process, or
    from ``settings.worker_processes`` worker processes behind the same ports (``workers.py``).

    Raises:
        PopfuseError: an artifact failed to load, a port cannot be bound, or a worker process kept crashing.
    """
    if settings.worker_processes > 1:
        from .workers import Supervisor  # which imports this module

        Supervisor(artifacts, settings).run()
        return
    run(build(artifacts, settings), settings)
