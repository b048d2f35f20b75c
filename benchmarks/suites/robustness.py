"""Robustness: slow clients cannot hold the server's connections, and malformed requests cannot make it fail
or grow.

``popfuse serve`` on the PP-OCR artifact, in its own process. Slowloris: a
thousand connections send part of a request's headers and then nothing, and
hold; then two hundred send headers and part of a body. Meanwhile one client
sends classifier requests. The server's open descriptors are read from /proc
before, while they hold, and after its timeouts. Malformed requests: ten
thousand, of the kinds that once got a 500 and others, over keep-alive
connections; every answer must be a 4xx, and the server's RSS must not grow
beyond its idle noise. Targets: none of the connections left after the
timeout, no normal request failed; no 5xx, no RSS growth beyond noise.
"""

from __future__ import annotations

import http.client
import resource
import socket
import sys
import threading
import time

import numpy as np

from ..context import Context
from ..models import ppocr
from ..server_process import ServerProcess
from ..setups import build_fused

PARTIAL_HEADERS = b"GET /v2/health/ready HTTP/1.1\r\nHost: bench\r\nX-Slow: "
PARTIAL_BODY = b"POST /v2/models/cls/infer HTTP/1.1\r\nHost: bench\r\nContent-Length: 1000\r\n\r\n{\"inputs\": ["


def _malformed() -> dict[str, tuple[bytes, dict]]:
    x = '{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": %s}'
    deep = "[" * 50_000 + "]" * 50_000
    return {
        "a number too large for a float": (('{"inputs": [%s]}' % (x % "[1e400, 0, 0, 0]")).encode(), {}),
        "an integer too large for one": (('{"inputs": [%s]}' % (x % f"[{10**400}, 0, 0, 0]")).encode(), {}),
        "inputs nested 50,000 deep": (('{"inputs": %s}' % deep).encode(), {}),
        "data nested 50,000 deep": (('{"inputs": [%s]}' % (x % deep)).encode(), {}),
        "parameters nested 50,000 deep": (('{"inputs": [], "parameters": %s}' % ('{"a": ' * 50_000 + "1"
                                                                                + "}" * 50_000)).encode(), {}),
        "a header length of '²'": (b'{"inputs": []}', {"Inference-Header-Content-Length": "²"}),
        "a header length of 5,000 digits": (b'{"inputs": []}', {"Inference-Header-Content-Length": "9" * 5000}),
        "bytes that are not JSON": (bytes(range(256)), {}),
        "a shape the data does not fill": (('{"inputs": [%s]}' % (x % "[1, 2]")).encode(), {}),
    }


def run(ctx: Context) -> dict:
    models = [ppocr(n) for n in (("cls",) if ctx.smoke else ("det", "rec", "cls"))]
    artifact = build_fused(models, ctx.workdir / "robustness").popef_path
    header_timeout, body_timeout = (5.0, 5.0) if not ctx.smoke else (0.5, 0.5)
    command = [sys.executable, "-m", "popfuse", "serve", str(artifact), "--threads", str(ctx.threads),
               "--header-timeout", str(header_timeout), "--body-timeout", str(body_timeout)]
    _open_files(ctx.scale(1000, 50) + 256)
    cls = ppocr("cls").feeds["x"]
    with ServerProcess(command) as server:
        slowloris = _hold(server, PARTIAL_HEADERS, ctx.scale(1000, 50), header_timeout, cls)
        stalled = _hold(server, PARTIAL_BODY, ctx.scale(200, 20), body_timeout, cls)
        malformed = _malformed_load(server, ctx.scale(10_000, 200), ctx.scale(1000, 50), idle_s=ctx.scale(4, 1))
    return {"slowloris": {**slowloris, "header_timeout_s": header_timeout},
            "stalled_bodies": {**stalled, "body_timeout_s": body_timeout}, "malformed": malformed}


def _open_files(count: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < count:
        resource.setrlimit(resource.RLIMIT_NOFILE, (count if hard == resource.RLIM_INFINITY else min(count, hard),
                                                    hard))


def _hold(server: ServerProcess, partial: bytes, count: int, timeout: float, x: np.ndarray) -> dict:
    """``count`` connections that send ``partial`` and hold, while one client sends classifier requests; how
    many server descriptors they took, and how many are left once the server's ``timeout`` has passed."""
    time.sleep(0.5)
    before = server.descriptors()
    stop = threading.Event()
    served, failed = [0], [0]

    def normal() -> None:
        body, headers = _binary(x)
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        while not stop.is_set():
            try:
                conn.request("POST", "/v2/models/cls/infer", body=body, headers=headers)
                response = conn.getresponse()
                response.read()
                ok = response.status == 200
            except OSError:
                ok = False
                conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
            served[0] += ok
            failed[0] += not ok
        conn.close()

    worker = threading.Thread(target=normal)
    worker.start()
    sockets = []
    try:
        for _ in range(count):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=timeout + 30)
            sock.sendall(partial)
            sockets.append(sock)
        opened = time.monotonic()
        time.sleep(min(1.0, timeout / 2))
        during = server.descriptors()
        for sock in sockets:  # each read ends when the server closes that connection
            while sock.recv(65536):
                pass
        waited = time.monotonic() - opened
    finally:
        for sock in sockets:
            sock.close()
        stop.set()
        worker.join()
    time.sleep(0.5)  # the server sees the last closes
    after = server.descriptors()
    return {"connections": count, "fds_before": before, "fds_during": during, "fds_after": after,
            "remaining_after": max(0, after - before), "waited_s": waited, "served": served[0],
            "served_failures": failed[0]}


def _binary(x: np.ndarray) -> tuple[bytes, dict]:
    header = ('{"inputs": [{"name": "x", "datatype": "FP32", "shape": %s, '
              '"parameters": {"binary_data_size": %d}}]}' % (list(x.shape), x.nbytes)).encode()
    return header + x.tobytes(), {"Inference-Header-Content-Length": str(len(header))}


def _malformed_load(server: ServerProcess, total: int, warmup: int, idle_s: int, clients: int = 4) -> dict:
    """``warmup`` then ``total`` malformed requests over ``clients`` keep-alive connections: how they were
    answered, and the server's RSS at the start, halfway and the end, with its noise over ``idle_s`` seconds
    idle."""
    kinds = _malformed()
    cases = list(kinds.values())
    counts = {"client": 0, "server": 0, "other": 0}
    lock = threading.Lock()

    def send(n: int, offset: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        for k in range(n):
            body, headers = cases[(offset + k) % len(cases)]
            conn.request("POST", "/v2/models/cls/infer", body=body, headers=headers)
            response = conn.getresponse()
            response.read()
            kind = "client" if 400 <= response.status < 500 else "server" if response.status >= 500 else "other"
            with lock:
                counts[kind] += 1
        conn.close()

    def load(n: int) -> None:
        threads = [threading.Thread(target=send, args=(n // clients, c)) for c in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    load(warmup)
    idle = []
    for _ in range(idle_s + 1):
        idle.append(server.rss_mb())
        time.sleep(1.0)
    noise = max(max(idle) - min(idle), 1.0)
    counts.update(client=0, server=0, other=0)
    start = server.rss_mb()
    load(total // 2)
    middle = server.rss_mb()
    load(total - total // 2)
    end = server.rss_mb()
    return {"requests": counts["client"] + counts["server"] + counts["other"], "warmup": warmup,
            "clients": clients, "kinds": list(kinds), "client_errors": counts["client"],
            "server_errors": counts["server"], "other": counts["other"], "rss_start_mb": start,
            "rss_middle_mb": middle, "rss_end_mb": end, "rss_growth_mb": end - start, "rss_noise_mb": noise}
