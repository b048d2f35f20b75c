"""A ``grpc.aio`` server that answers ServerLive and nothing else, on the event loop ``popfuse serve`` runs
(uvloop where installed): what one call costs grpc.aio itself, with no popfuse code in it. The serving suite
compares its CPU per call with ``popfuse serve``'s over gRPC and HTTP.

Usage: ``python -m popfuse.benchmarks.bare_grpc PORT``; it runs until terminated.
"""

from __future__ import annotations

import asyncio
import sys

import grpc
from tritonclient.grpc import service_pb2


async def _live(request: service_pb2.ServerLiveRequest, context: grpc.aio.ServicerContext):
    return service_pb2.ServerLiveResponse(live=True)


async def _serve(port: int) -> None:
    server = grpc.aio.server()
    handler = grpc.unary_unary_rpc_method_handler(
        _live, request_deserializer=service_pb2.ServerLiveRequest.FromString,
        response_serializer=service_pb2.ServerLiveResponse.SerializeToString)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "inference.GRPCInferenceService", {"ServerLive": handler}),))
    if server.add_insecure_port(f"127.0.0.1:{port}") == 0:
        sys.exit(f"cannot listen on 127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


def main(argv: list[str]) -> None:
    try:
        import uvloop
    except ModuleNotFoundError:
        asyncio.run(_serve(int(argv[0])))
    else:
        uvloop.run(_serve(int(argv[0])))


if __name__ == "__main__":
    main(sys.argv[1:])
