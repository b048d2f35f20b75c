"""Closed-loop clients of a KServe v2 server over HTTP and gRPC, as the serving benchmarks load one."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from collections.abc import Callable, Sequence

import grpc
import numpy as np
from tritonclient.grpc import service_pb2, service_pb2_grpc

from popfuse.runtime.dtypes import kserve_from_numpy


class Request:
    """One model's request, as each protocol sends it: binary tensors over HTTP, raw contents over gRPC."""

    def __init__(self, model: str, inputs: dict[str, np.ndarray]):
        self.model, self.inputs = model, inputs
        header = json.dumps({
            "inputs": [{"name": name, "datatype": kserve_from_numpy(x.dtype), "shape": list(x.shape),
                        "parameters": {"binary_data_size": x.nbytes}} for name, x in inputs.items()],
            "parameters": {"binary_data_output": True},
        }).encode()
        self.http_body = header + b"".join(x.tobytes() for x in inputs.values())
        self.http_headers = {"Inference-Header-Content-Length": str(len(header)),
                             "Content-Type": "application/octet-stream"}
        self.grpc_message = service_pb2.ModelInferRequest(model_name=model)
        for name, x in inputs.items():
            self.grpc_message.inputs.add(name=name, datatype=kserve_from_numpy(x.dtype), shape=x.shape)
            self.grpc_message.raw_input_contents.append(x.tobytes())


class HttpClient:
    """One keep-alive HTTP connection to the server on ``port``, its paths under ``prefix``."""

    def __init__(self, port: int, prefix: str = ""):
        self.prefix = prefix
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        self.conn.connect()
        # http.client sends a request's headers and body in two writes: without TCP_NODELAY, Nagle's algorithm
        # holds the body's last segment until the server's delayed ACK (up to 40 ms). Triton's clients, curl
        # and perf_analyzer set it, and gRPC does.
        self.conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def send(self, request: Request) -> bool:
        """Whether the server answered the request with 200."""
        self.conn.request("POST", f"{self.prefix}/v2/models/{request.model}/infer", body=request.http_body,
                          headers=request.http_headers)
        response = self.conn.getresponse()
        response.read()
        return response.status == 200

    def live(self) -> bool:
        """Whether the server answered its liveness check with 200."""
        self.conn.request("GET", f"{self.prefix}/v2/health/live")
        response = self.conn.getresponse()
        response.read()
        return response.status == 200

    def close(self) -> None:
        self.conn.close()


class GrpcClient:
    """One gRPC channel to the server on ``port``."""

    def __init__(self, port: int):
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self.stub = service_pb2_grpc.GRPCInferenceServiceStub(self.channel)

    def send(self, request: Request) -> bool:
        """Whether the server answered the request."""
        try:
            self.stub.ModelInfer(request.grpc_message, timeout=300)
            return True
        except grpc.RpcError:
            return False

    def live(self) -> bool:
        """Whether the server answered its liveness check (ServerLive) with live."""
        return self.stub.ServerLive(service_pb2.ServerLiveRequest(), timeout=30).live

    def close(self) -> None:
        self.channel.close()


def grpc_ready(channel: grpc.Channel, timeout: float = 60) -> None:
    """Wait until ``channel``'s server accepts connections (a server process just started)."""
    grpc.channel_ready_future(channel).result(timeout=timeout)


def closed_loop(connect: Callable[[], HttpClient | GrpcClient], sequences: Sequence[Sequence[Request]],
                warm: Request | None = None) -> dict:
    """Closed-loop load: one client per sequence (``connect()``), each sending its next request when the last
    returns. Each first sends ``warm``, if given, before the clock starts (its connection is then up).

    Returns:
        ``rps`` (answered requests per second), ``latencies`` (seconds, of the answered requests; NaN when
        none was) and ``failures``.
    """
    latencies: list[list[float]] = [[] for _ in sequences]
    failures = [0] * len(sequences)
    start_gate = threading.Barrier(len(sequences) + 1)

    def client(k: int) -> None:
        conn = connect()
        if warm is not None:
            conn.send(warm)
        start_gate.wait()
        for request in sequences[k]:
            t = time.perf_counter()
            if conn.send(request):
                latencies[k].append(time.perf_counter() - t)
            else:
                failures[k] += 1
        conn.close()

    workers = [threading.Thread(target=client, args=(k,)) for k in range(len(sequences))]
    for w in workers:
        w.start()
    start_gate.wait()
    began = time.perf_counter()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - began
    flat = np.array([x for per in latencies for x in per]) if any(latencies) else np.array([np.nan])
    return {"rps": len(flat) / elapsed, "latencies": flat, "failures": int(sum(failures))}
