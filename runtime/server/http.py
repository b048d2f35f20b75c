"""KServe v2 over HTTP: a thin Starlette adapter over the data plane, served by uvicorn.

Why Starlette on uvicorn: an ASGI stack with httptools' C parser and uvloop
handles thousands of small requests a second per core, streams request bodies
(so a size limit is enforced before a body is read whole), and uvicorn's
SIGTERM handling stops intake and waits for in-flight requests, which is the
shutdown this server promises. KServe's and MLServer's Python servers run on
the same stack.

This module owns the only table of HTTP status codes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..config import RuntimeConfig
from ..errors import BackendError, ExecutionError
from .dataplane import DataPlane
from .errors import (
    BadRequestError,
    ModelNotFoundError,
    OverloadedError,
    PayloadTooLargeError,
    ServerConfigError,
    UnavailableError,
)
from .heap import keep_freed_memory
from .protocol import HEADER_LENGTH, decode_request, encode_response
from .repository import Repository
from .settings import ServerSettings
from .stats import StatsCollector

log = logging.getLogger(__name__)

STATUS: dict[type[Exception], int] = {
    BadRequestError: 400,
    ExecutionError: 400,  # the model rejected an input that passed the checks (e.g. an unusable image size)
    BackendError: 500,  # the engine failed for a reason that is not the request's
    ModelNotFoundError: 404,
    PayloadTooLargeError: 413,
    OverloadedError: 503,
    UnavailableError: 503,
    ServerConfigError: 500,
}


def _error(e: Exception) -> JSONResponse:
    for cls, status in STATUS.items():
        if isinstance(e, cls):
            return JSONResponse({"error": str(e)}, status_code=status)
    log.exception("internal error")
    return JSONResponse({"error": f"internal error: {type(e).__name__}: {e}"}, status_code=500)


async def _body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLargeError(f"the request body has {declared} bytes, the limit is {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLargeError(f"the request body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(dataplane: DataPlane) -> Starlette:
    """The ASGI application for ``dataplane``."""
    keep_freed_memory()
    settings = dataplane.settings
    registry = CollectorRegistry()
    registry.register(StatsCollector(dataplane.stats))

    def handler(fn):
        async def wrapped(request: Request) -> Response:
            try:
                return await fn(request)
            except Exception as e:  # mapped to a status by the table above
                return _error(e)

        return wrapped

    async def live(request: Request) -> Response:
        return JSONResponse({"live": dataplane.live()})

    async def ready(request: Request) -> Response:
        ok = dataplane.ready()
        return JSONResponse({"ready": ok}, status_code=200 if ok else 503)

    async def server_metadata(request: Request) -> Response:
        return JSONResponse(dataplane.server_metadata())

    async def model_metadata(request: Request) -> Response:
        return JSONResponse(dataplane.model_metadata(request.path_params["name"]))

    async def model_ready(request: Request) -> Response:
        ok = dataplane.model_ready(request.path_params["name"])
        return JSONResponse({"name": request.path_params["name"], "ready": ok}, status_code=200 if ok else 503)

    async def infer(request: Request) -> Response:
        body = await _body(request, settings.max_body_bytes)
        raw_length = request.headers.get(HEADER_LENGTH)
        if raw_length is not None and not raw_length.isdigit():
            raise BadRequestError(f"{HEADER_LENGTH} must be a byte count, received {raw_length!r}")
        infer_request = decode_request(body, None if raw_length is None else int(raw_length))
        response = await dataplane.infer(request.path_params["name"], infer_request)
        payload, header_length = encode_response(response, infer_request)
        headers = {} if header_length is None else {HEADER_LENGTH: str(header_length)}
        media = "application/json" if header_length is None else "application/octet-stream"
        return Response(payload, media_type=media, headers=headers)

    async def statistics(request: Request) -> Response:
        return JSONResponse(dataplane.statistics(request.path_params.get("name")))

    async def repository_index(request: Request) -> Response:
        return JSONResponse(dataplane.repository.index())

    async def load(request: Request) -> Response:
        await dataplane.load(request.path_params["name"])
        return JSONResponse({})

    async def unload(request: Request) -> Response:
        await dataplane.unload(request.path_params["name"])
        return JSONResponse({})

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        await dataplane.close()

    model = "/v2/models/{name}"
    versioned = "/v2/models/{name}/versions/{version}"
    routes = [
        Route("/v2/health/live", handler(live)),
        Route("/v2/health/ready", handler(ready)),
        Route("/v2", handler(server_metadata)),
        Route(model, handler(model_metadata)),
        Route(versioned, handler(model_metadata)),
        Route(f"{model}/ready", handler(model_ready)),
        Route(f"{versioned}/ready", handler(model_ready)),
        Route(f"{model}/infer", handler(infer), methods=["POST"]),
        Route(f"{versioned}/infer", handler(infer), methods=["POST"]),
        Route(f"{model}/stats", handler(statistics)),
        Route(f"{versioned}/stats", handler(statistics)),
        Route("/v2/models/stats", handler(statistics)),
        Route("/v2/repository/index", handler(repository_index), methods=["POST"]),
        Route("/v2/repository/models/{name}/load", handler(load), methods=["POST"]),
        Route("/v2/repository/models/{name}/unload", handler(unload), methods=["POST"]),
        Route("/metrics", handler(metrics)),
    ]
    return Starlette(routes=routes, lifespan=lifespan)


def build(artifacts: list[str | os.PathLike], settings: ServerSettings) -> DataPlane:
    """Open and warm every artifact; returns the data plane that serves them."""
    config = RuntimeConfig(validate_io_params=False, intra_op_num_threads=settings.intra_op_num_threads)
    dataplane = DataPlane(settings, lambda attach: Repository(artifacts, config, attach))
    for entry in dataplane.repository.index():
        dataplane.load_now(entry["name"])
    return dataplane


class _Server(uvicorn.Server):
    """uvicorn's server, ending with status 0 once SIGTERM or SIGINT has drained it.

    uvicorn raises the signal again after its graceful shutdown, so a clean
    drain would end as "killed by SIGTERM" and look like a crash to the caller.
    """

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


def serve(artifacts: list[str | os.PathLike], settings: ServerSettings) -> None:
    """Serve ``artifacts`` until SIGTERM or SIGINT, then finish in-flight requests and return."""
    app = create_app(build(artifacts, settings))
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level="warning",
        timeout_graceful_shutdown=settings.graceful_timeout_s,
        access_log=False,
    )
    server = _Server(config)
    log.info("serving on http://%s:%d", settings.host, settings.port)
    server.run()
