"""The Ray Serve application of a catalog, for Ray's own tools and for ``popfuse serve --ray``.

With Ray's tools::

    serve run popfuse.runtime.scaleout.app:build catalog=catalog.yaml

or, in a ``serve deploy`` config file, ``import_path: popfuse.runtime.scaleout.app:build`` with
``args: {catalog: /shared/catalog.yaml}``. Either way the catalog is read and checked (every artifact's
header) where the application is built, before any replica starts. gRPC needs Ray Serve's gRPC proxy to
register ``grpc_service.SERVICER_FUNCTION``: ``grpc_options`` in that config file (``grpc_options()``
here, for ``serve.start``).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from typing import Any

import ray
from ray import serve
from ray.serve import Application
from ray.serve.config import gRPCOptions

from ..display import human_size
from ..errors import PopfuseError
from .catalog import Catalog, CatalogError, load_catalog
from .deployments import Artifacts, Ingress
from .grpc_service import SERVICER_FUNCTION

log = logging.getLogger(__name__)

#: The application's name in Ray Serve.
APP_NAME = "popfuse"


def application(catalog: Catalog) -> Application:
    """The two deployments of ``catalog``, with its scaling settings.

    Raises:
        CatalogError: Ray refuses a setting (the message names the section).
    """
    deployments = []
    for section, deployment in (("replicas", Artifacts), ("ingress", Ingress)):
        try:
            deployments.append(deployment.options(**getattr(catalog, section).ray))
        except Exception as e:  # Ray's own checks of its options: pydantic, ValueError, TypeError
            message = " ".join(str(e).split())
            raise CatalogError(f"{catalog.path}: {section}: Ray Serve refuses the settings: {message}") from e
    artifacts, ingress = deployments
    return ingress.bind(catalog, artifacts.bind(catalog))


def build(args: dict[str, Any]) -> Application:
    """Ray Serve's application builder: ``args`` is ``{"catalog": PATH}``.

    Raises:
        CatalogError: the arguments or the catalog are wrong.
    """
    unknown = sorted(set(args) - {"catalog"})
    if "catalog" not in args or unknown:
        raise CatalogError(f"the popfuse application takes one argument, catalog=PATH.yaml; received "
                           f"{', '.join(f'{k}={v}' for k, v in args.items()) or 'none'}")
    return application(load_catalog(args["catalog"]))


def grpc_options(port: int) -> gRPCOptions:
    """Ray Serve's gRPC proxy on ``port``, serving Triton's ``GRPCInferenceService`` (every address of the node:
    Ray's gRPC proxy takes no host)."""
    return gRPCOptions(port=port, grpc_servicer_functions=[SERVICER_FUNCTION])


def serve_catalog(catalog: Catalog, host: str = "127.0.0.1", port: int = 8000, grpc_port: int | None = 8001) -> None:
    """Serve ``catalog`` until SIGTERM or SIGINT, on the Ray cluster ``RAY_ADDRESS`` or ``ray start`` names,
    else on one started here; then delete the application (and stop the cluster, if it started here).

    HTTP listens on ``host``:``port``; gRPC, unless ``grpc_port`` is None, on ``grpc_port`` of every address.

    Raises:
        CatalogError: Ray refuses a setting (before anything starts).
        PopfuseError: no cluster at ``RAY_ADDRESS``, or the application failed to start.
    """
    app = application(catalog)
    address = os.environ.get("RAY_ADDRESS")
    try:  # RAY_ADDRESS's cluster, else the one `ray start` started on this machine, else a new local one
        context = ray.init(logging_level=logging.WARNING)
    except ConnectionError as e:
        named = f"RAY_ADDRESS ({address})" if address else "the cluster `ray start` left on this machine"
        raise PopfuseError(f"no Ray cluster answers at {named}: {e}; start it, or `ray stop` and unset "
                           "RAY_ADDRESS to serve on a local cluster") from e
    stop = _stop_on_signals()
    try:
        try:
            serve.start(http_options={"host": host, "port": port},
                        grpc_options=None if grpc_port is None else grpc_options(grpc_port))
        except Exception as e:  # Ray wraps the proxy's own error (a port in use) in its actor's traceback
            grpc = "" if grpc_port is None else f", or gRPC on port {grpc_port}"
            raise PopfuseError(f"Ray Serve cannot serve HTTP on {host}:{port}{grpc}: {_last_line(e)}") from e
        try:
            serve.run(app, name=APP_NAME, route_prefix="/")
        except Exception as e:  # likewise a replica that failed to start
            raise PopfuseError(f"the application failed to start on Ray: {_last_line(e)}") from e
        models = sum(len(a.models) for a in catalog.artifacts.values())
        dashboard = f" (dashboard: http://{context.dashboard_url})" if context.dashboard_url else ""
        count = f"{len(catalog.artifacts)} artifact" + ("s" if len(catalog.artifacts) > 1 else "")
        grpc = "" if grpc_port is None else f" and gRPC on port {grpc_port} (every address)"
        log.info("serving %s (%d models) on http://%s:%d%s through Ray Serve, on the Ray cluster at %s%s; "
                 "replicas hold up to %s of artifacts each", count, models, host, port, grpc,
                 ray.get_runtime_context().gcs_address, dashboard, human_size(catalog.replicas.memory_budget))
        while not stop.wait(1.0):
            pass
        log.info("stopping: deleting the application")
    finally:
        try:
            serve.delete(APP_NAME)
        finally:
            ray.shutdown()  # a cluster this process started stops with it


def _last_line(e: Exception) -> str:
    """The message at the end of an error Ray raised with a remote traceback before it."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return lines[-1] if lines else type(e).__name__


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    return stop
