"""KServe v2 over HTTP: a thin Starlette adapter over the data plane.

Why Starlette on uvicorn: an ASGI stack with httptools' C parser and uvloop
handles thousands of small requests a second per core, streams request bodies
(so a size limit is enforced before a body is read whole), and uvicorn's
SIGTERM handling stops intake and waits for in-flight requests, which is the
shutdown this server promises. KServe's and MLServer's Python servers run on
the same stack. ``connections.py`` bounds how long a connection may take to
send a request and how many may be open; ``serve.py`` runs this app.

This module owns the only table of HTTP status codes.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..errors import BackendError, ExecutionError
from .access import Restrictions
from .dataplane import DataPlane
from .errors import (
    BadRequestError,
    ForbiddenError,
    ModelControlError,
    ModelNotFoundError,
    OverloadedError,
    PayloadTooLargeError,
    ServerConfigError,
    UnavailableError,
    UnsupportedError,
)
from .heap import keep_freed_memory
from .limits import byte_count, check_size
from .protocol import HEADER_LENGTH, decode_request, encode_response
from .stats import CONTENT_TYPE, metrics_text

log = logging.getLogger(__name__)

STATUS: dict[type[Exception], int] = {
    BadRequestError: 400,
    ExecutionError: 400,  # the model rejected an input that passed the checks (e.g. an unusable image size)
    UnsupportedError: 400,  # an endpoint of the protocol this server does not offer (shared memory, tracing)
    ForbiddenError: 403,
    ModelControlError: 400,  # loads are off while several worker processes serve: resending will not help
    ModelNotFoundError: 404,
    PayloadTooLargeError: 413,
    BackendError: 500,  # the engine failed for a reason that is not the request's
    ServerConfigError: 500,
    OverloadedError: 503,
    UnavailableError: 503,
}


def _error(e: Exception) -> JSONResponse:
    for cls, status in STATUS.items():
        if isinstance(e, cls):
            return JSONResponse({"error": str(e)}, status_code=status)
    log.exception("internal error")
    return JSONResponse({"error": f"internal error: {type(e).__name__}: {e}"}, status_code=500)


async def _body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        check_size("the request body", byte_count("Content-Length", declared), limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        check_size("the request body", size, limit)
        chunks.append(chunk)
    return b"".join(chunks)


Handler = Callable[[Request], Awaitable[Response]]


def create_app(dataplane: DataPlane) -> Starlette:
    """The ASGI application for ``dataplane``."""
    keep_freed_memory()
    settings = dataplane.settings
    restrictions = Restrictions(settings.http_restricted)

    def handler(group: str | None, fn: Handler) -> Handler:
        """``fn`` behind the restriction of API ``group``, its domain errors mapped by the table above."""

        async def wrapped(request: Request) -> Response:
            try:
                if group is not None:
                    restrictions.check(group, request.headers.get)
                return await fn(request)
            except ClientDisconnect:
                log.info("%s %s: the client disconnected before sending the whole request",
                         request.method, request.url.path)
                return Response(status_code=400)  # never sent: the connection is gone
            except Exception as e:  # mapped to a status by the table above
                return _error(e)

        return wrapped

    def name(request: Request) -> str:
        return request.path_params["name"]

    def version(request: Request) -> str:
        return request.path_params.get("version", "")

    async def live(request: Request) -> Response:
        return JSONResponse({"live": dataplane.live()})

    async def ready(request: Request) -> Response:
        ok = dataplane.ready()
        return JSONResponse({"ready": ok}, status_code=200 if ok else 503)

    async def server_metadata(request: Request) -> Response:
        return JSONResponse(dataplane.server_metadata())

    async def model_metadata(request: Request) -> Response:
        return JSONResponse(dataplane.model_metadata(name(request), version(request)))

    async def model_config(request: Request) -> Response:
        return JSONResponse(dataplane.model_config(name(request), version(request)))

    async def model_ready(request: Request) -> Response:
        ok = dataplane.model_ready(name(request), version(request))
        return JSONResponse({"name": name(request), "ready": ok}, status_code=200 if ok else 503)

    async def infer(request: Request) -> Response:
        dataplane.model(name(request), version(request))  # an unknown model is refused before its body is read
        body = await _body(request, settings.max_body_bytes)
        raw_length = request.headers.get(HEADER_LENGTH)
        infer_request = decode_request(body, None if raw_length is None else byte_count(HEADER_LENGTH, raw_length))
        response = await dataplane.infer(name(request), infer_request, version(request))
        payload, header_length = encode_response(response, infer_request)
        headers = {} if header_length is None else {HEADER_LENGTH: str(header_length)}
        media = "application/json" if header_length is None else "application/octet-stream"
        return Response(payload, media_type=media, headers=headers)

    async def statistics(request: Request) -> Response:
        return JSONResponse(dataplane.statistics(request.path_params.get("name"), version(request)))

    async def repository_index(request: Request) -> Response:
        return JSONResponse(dataplane.repository.index())

    async def load(request: Request) -> Response:
        await dataplane.load(name(request))
        return JSONResponse({})

    async def unload(request: Request) -> Response:
        await dataplane.unload(name(request))
        return JSONResponse({})

    worker = None if settings.worker_index is None else {"worker": str(settings.worker_index)}

    async def metrics(request: Request) -> Response:
        return Response(metrics_text(list(dataplane.stats.values()), worker), media_type=CONTENT_TYPE)

    def unsupported(what: str) -> Handler:
        async def refuse(request: Request) -> Response:
            raise UnsupportedError.feature(what)

        return refuse

    async def http_error(request: Request, e: Exception) -> Response:
        if isinstance(e, HTTPException) and e.status_code == 405:
            return JSONResponse({"error": f"{request.url.path} does not take {request.method}"}, status_code=405)
        status = e.status_code if isinstance(e, HTTPException) else 404
        return JSONResponse({"error": f"no such endpoint: {request.method} {request.url.path}"}, status_code=status)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        await dataplane.close()

    routes = [
        Route("/v2/health/live", handler("health", live)),
        Route("/v2/health/ready", handler("health", ready)),
        Route("/v2", handler("metadata", server_metadata)),
        # Before /v2/models/{name}, which would take "stats" for a model's name.
        Route("/v2/models/stats", handler("statistics", statistics)),
        Route("/v2/repository/index", handler("model-repository", repository_index), methods=["POST"]),
        Route("/v2/repository/models/{name}/load", handler("model-repository", load), methods=["POST"]),
        Route("/v2/repository/models/{name}/unload", handler("model-repository", unload), methods=["POST"]),
        Route("/metrics", metrics),
    ]
    for model in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
        routes += [
            Route(model, handler("metadata", model_metadata)),
            Route(f"{model}/ready", handler("health", model_ready)),
            Route(f"{model}/config", handler("model-config", model_config)),
            Route(f"{model}/infer", handler("inference", infer), methods=["POST"]),
            Route(f"{model}/stats", handler("statistics", statistics)),
        ]
    for kind in ("systemsharedmemory", "cudasharedmemory"):
        refuse = handler("shared-memory", unsupported("shared memory"))
        routes += [Route(f"/v2/{kind}/{action}", refuse, methods=["GET", "POST"])
                   for action in ("status", "region/{region}/status", "region/{region}/register",
                                  "region/{region}/unregister", "unregister")]
    routes += [
        Route("/v2/trace/setting", handler("trace", unsupported("tracing")), methods=["GET", "POST"]),
        Route("/v2/models/{name}/trace/setting", handler("trace", unsupported("tracing")), methods=["GET", "POST"]),
        Route("/v2/logging", handler("logging", unsupported("changing log settings")), methods=["GET", "POST"]),
    ]
    return Starlette(routes=routes, lifespan=lifespan, exception_handlers={HTTPException: http_error})
