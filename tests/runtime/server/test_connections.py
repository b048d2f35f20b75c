"""Bounded connections on a real server: headers and bodies that never finish are cut off, and the number of
open connections is capped, while normal requests are served all along.

The suite uses a hundred slow clients and one-second limits; the benchmark (``popfuse bench --only
robustness``) measures a thousand against the default limits' shape.
"""

from __future__ import annotations

import os
import socket
import threading
import time

import numpy as np
import pytest

from tests.models import scale_model

from .conftest import named
from .test_http import infer_json


@pytest.fixture
def guarded(serve):
    return serve({"m": [scale_model()]}, {"m": named("m")}, header_timeout_s=1.0, body_timeout_s=1.0,
                 max_connections=150)


def _connect(url: str) -> socket.socket:
    host, port = url.split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    return sock


def _read_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def _serve_meanwhile(url: str, stop: threading.Event, statuses: list[int]) -> None:
    while not stop.is_set():
        statuses.append(infer_json(url, "m", "X", np.ones((1, 4), np.float32))[0])
        time.sleep(0.02)


def test_partial_headers_are_cut_off_while_normal_requests_are_served(guarded):
    before = len(os.listdir("/proc/self/fd"))
    stop, statuses = threading.Event(), []
    worker = threading.Thread(target=_serve_meanwhile, args=(guarded.url, stop, statuses))
    worker.start()
    try:
        slow = [_connect(guarded.url) for _ in range(100)]
        for sock in slow:
            sock.sendall(b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        time.sleep(0.3)
        assert guarded.open_connections() >= 100
        answers = [_read_all(sock) for sock in slow]  # each ends when the server closes it
        for sock in slow:
            sock.close()
    finally:
        stop.set()
        worker.join()
    assert all(a.startswith(b"HTTP/1.1 408 ") and b"headers took more than 1 s" in a for a in answers)
    assert guarded.open_connections() == 0
    assert statuses and set(statuses) == {200}
    assert len(os.listdir("/proc/self/fd")) <= before + 2


def test_a_body_stalled_midway_is_cut_off(guarded):
    stalled = [_connect(guarded.url) for _ in range(20)]
    for sock in stalled:
        sock.sendall(b"POST /v2/models/m/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"inp")
    started = time.monotonic()
    for sock in stalled:
        assert _read_all(sock) == b""  # closed without an answer: the application saw the client go
        sock.close()
    assert time.monotonic() - started < 5
    assert guarded.open_connections() == 0
    assert infer_json(guarded.url, "m", "X", np.ones((1, 4), np.float32))[0] == 200


def test_connections_past_the_cap_are_refused_with_a_503(guarded):
    held = [_connect(guarded.url) for _ in range(150)]
    time.sleep(0.3)
    extra = _connect(guarded.url)
    answer = _read_all(extra)
    assert answer.startswith(b"HTTP/1.1 503 ") and b"150 connections open" in answer
    extra.close()
    for sock in held:
        sock.close()
    time.sleep(0.3)
    assert infer_json(guarded.url, "m", "X", np.ones((1, 4), np.float32))[0] == 200
