"""A real server on loopback, in a thread of the test process, with real clients."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from popfuse.fusion import ModelOptions
from popfuse.runtime.server.dataplane import DataPlane
from popfuse.runtime.server.serve import Server, build
from popfuse.runtime.server.settings import ServerSettings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RunningServer:
    """The server (HTTP, and gRPC when ``settings.grpc_port`` is set) on 127.0.0.1, serving a data plane (by
    default one over ``artifacts``) in a thread of the test process; ``stop()`` stops it."""

    def __init__(self, artifacts: Sequence[Path], settings: ServerSettings, dataplane: DataPlane | None = None):
        self.artifacts = list(artifacts)
        self.settings = settings
        self.dataplane = dataplane or build(self.artifacts, settings)
        self.url = f"127.0.0.1:{settings.port}"
        self.grpc_url = f"127.0.0.1:{settings.grpc_port}"
        self._server = Server(self.dataplane, settings)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)

    def open_connections(self) -> int:
        """HTTP connections the server holds open now."""
        return len(self._server.server_state.connections)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=30)


def server_settings(grpc: bool = False, **settings) -> ServerSettings:
    """Settings for a test server on free loopback ports (gRPC off unless ``grpc``)."""
    return ServerSettings(port=free_port(), grpc_port=free_port() if grpc else None, **settings)


@pytest.fixture
def serve(make_artifact):
    """Start a server over artifacts built from models, or already built:
    serve({"name": [models] or path}, options, grpc=False, **settings)."""
    running: list[RunningServer] = []

    def start(artifacts: dict, options: dict | None = None, grpc: bool = False, **settings) -> RunningServer:
        paths = []
        for name, models in artifacts.items():
            opts = (options or {}).get(name)
            paths.append(models if isinstance(models, Path) else make_artifact(models, opts, name=f"{name}.popef"))
        server = RunningServer(paths, server_settings(grpc, **settings))
        running.append(server)
        return server

    yield start
    for server in running:
        server.stop()


def named(*names: str) -> list[ModelOptions]:
    return [ModelOptions(name=n) for n in names]
