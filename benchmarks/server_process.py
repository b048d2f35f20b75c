"""A server in its own process on free loopback ports, as the serving benchmarks start it."""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path


def free_port() -> int:
    """A loopback port free now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """CPU time process ``pid`` has used so far, user and system."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


class ServerProcess:
    """``command`` (``popfuse serve …`` or the baseline server) on free HTTP and gRPC ports, up and ready inside
    the ``with``; stopped with SIGTERM after it."""

    def __init__(self, command: Sequence[str]):
        self.command = list(command)

    def __enter__(self) -> ServerProcess:
        self.port, self.grpc_port = free_port(), free_port()
        self.proc = subprocess.Popen([*self.command, "--port", str(self.port), "--grpc-port", str(self.grpc_port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 120
        while True:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                conn.request("GET", "/v2/health/ready")
                if conn.getresponse().status == 200:
                    conn.close()
                    return self
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server did not start: {self.proc.stderr.read().decode()[-2000:]}")
            time.sleep(0.1)

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()

    def descriptors(self) -> int:
        """File descriptors the server process holds open now."""
        return len(list(Path(f"/proc/{self.proc.pid}/fd").iterdir()))

    def rss_mb(self) -> float:
        """The server process's resident memory now, in MB."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS in /proc status")

    def cpu_seconds(self) -> float:
        """CPU time the server process has used so far, user and system."""
        return cpu_seconds(self.proc.pid)

    def inferences(self, model: str) -> int:
        """How many inferences of ``model`` the server has counted."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        conn.request("GET", f"/v2/models/{model}/stats")
        stats = json.loads(conn.getresponse().read())
        conn.close()
        return int(stats["model_stats"][0]["inference_count"])
