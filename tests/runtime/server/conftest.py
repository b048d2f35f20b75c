"""A real server on loopback, in a thread of the test process, with real clients."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
import uvicorn

from popfuse.fusion import ModelOptions
from popfuse.runtime.server.dataplane import DataPlane
from popfuse.runtime.server.http import build, create_app
from popfuse.runtime.server.settings import ServerSettings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RunningServer:
    """A uvicorn server on 127.0.0.1 serving a data plane (by default one over ``artifacts``), stopped by
    ``stop()``."""

    def __init__(self, artifacts: Sequence[Path], settings: ServerSettings, dataplane: DataPlane | None = None):
        self.artifacts = list(artifacts)
        self.dataplane = dataplane or build(self.artifacts, settings)
        self.url = f"127.0.0.1:{settings.port}"
        self._server = uvicorn.Server(
            uvicorn.Config(create_app(self.dataplane), host="127.0.0.1", port=settings.port, log_level="warning")
        )
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=30)


@pytest.fixture
def serve(make_artifact):
    """Start a server over artifacts built from models, or already built:
    serve({"name": [models] or path}, **settings)."""
    running: list[RunningServer] = []

    def start(artifacts: dict, options: dict | None = None, **settings) -> RunningServer:
        paths = []
        for name, models in artifacts.items():
            opts = (options or {}).get(name)
            paths.append(models if isinstance(models, Path) else make_artifact(models, opts, name=f"{name}.popef"))
        server = RunningServer(paths, ServerSettings(port=free_port(), **settings))
        running.append(server)
        return server

    yield start
    for server in running:
        server.stop()


def named(*names: str) -> list[ModelOptions]:
    return [ModelOptions(name=n) for n in names]
