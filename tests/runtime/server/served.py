"""A ``popfuse serve`` command run as a user runs it, and one request to it over a new connection of each protocol."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http

from tests.runtime.server.conftest import free_port

POPFUSE = Path(sys.executable).with_name("popfuse")


class Served:
    """A supervisor started by ``command(port, grpc_port)`` on free loopback ports, its stderr collected line by
    line; by default ``popfuse serve ARTIFACT… --worker-processes 2``."""

    def __init__(self, *artifacts: str | Path, command: Callable[[int, int], list[str]] | None = None):
        self.port, self.grpc_port = free_port(), free_port()
        self.url, self.grpc_url = f"127.0.0.1:{self.port}", f"127.0.0.1:{self.grpc_port}"
        command = command or (lambda port, grpc_port: [
            str(POPFUSE), "serve", *map(str, artifacts), "--port", str(port), "--grpc-port", str(grpc_port),
            "--worker-processes", "2", "--threads", "1", "--workers", "2"])
        self.process = subprocess.Popen(command(self.port, self.grpc_port), stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=lambda: self.lines.extend(self.process.stderr), daemon=True)
        self._reader.start()

    def wait_for_line(self, pattern: str, after: int = 0, timeout: float = 60) -> re.Match:
        """The first stderr line from index ``after`` on that matches ``pattern``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.lines[after:]:
                if match := re.search(pattern, line):
                    return match
            assert self.process.poll() is None, "".join(self.lines)
            time.sleep(0.05)
        raise AssertionError(f"no line matching {pattern!r} within {timeout} s:\n{''.join(self.lines)}")

    def wait_serving(self, after: int = 0) -> list[int]:
        """Wait until every worker serves; their pids."""
        match = self.wait_for_line(r"from \d+ worker processes \(pids ([\d, ]+)\)", after)
        return [int(pid) for pid in match.group(1).split(", ")]

    def children(self) -> list[int]:
        pid = self.process.pid
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        status = self.process.wait(timeout=60)
        self._reader.join(timeout=10)
        return status



def http_infer(url: str, x: np.ndarray, model: str = "scale", names: tuple[str, str] = ("X", "O")) -> np.ndarray:
    """One request over a new HTTP connection; the model's one output."""
    client = triton_http.InferenceServerClient(url)
    try:
        tensor = triton_http.InferInput(names[0], list(x.shape), "FP32")
        tensor.set_data_from_numpy(x, binary_data=True)
        return client.infer(model, [tensor]).as_numpy(names[1])
    finally:
        client.close()


def grpc_infer(url: str, x: np.ndarray, model: str = "branch", names: tuple[str, str] = ("X", "O")) -> np.ndarray:
    """One request over a new gRPC connection (a channel of its own: not one of gRPC's shared subchannels); the
    model's one output."""
    client = triton_grpc.InferenceServerClient(url, channel_args=[("grpc.use_local_subchannel_pool", 1)])
    try:
        tensor = triton_grpc.InferInput(names[0], list(x.shape), "FP32")
        tensor.set_data_from_numpy(x)
        return client.infer(model, [tensor]).as_numpy(names[1])
    finally:
        client.close()
