"""Triton's gRPC service as Ray Serve's gRPC proxy registers it (``gRPCOptions.grpc_servicer_functions``).

Ray's proxy serves the methods registered here, parsing each request with the deserializer registered for
it: ``popfuse serve``'s (``server.grpc.add_to_server``), so that bytes which do not parse reach the servicer
as a refusal (INVALID_ARGUMENT) rather than failing in the proxy. The proxy then pickles each request for the
ingress, and pickle finds a message's class by its module's name. tritonclient's generated messages give the
proto files' names (``grpc_service_pb2``, ``model_config_pb2``), not those of the modules that define them
(``tritonclient.grpc.service_pb2``), so nothing could unpickle them: ``register_message_modules`` registers
those names in a process, which the proxy does when it registers the service, and the ingress when it starts.
"""

from __future__ import annotations

import sys

import grpc
from tritonclient.grpc import model_config_pb2, service_pb2

from ..server.grpc import add_to_server


def register_message_modules() -> None:
    """Make tritonclient's messages picklable in this process: their modules importable by the names they give."""
    for message, module in ((service_pb2.ModelInferRequest, service_pb2), (model_config_pb2.ModelConfig,
                                                                           model_config_pb2)):
        sys.modules.setdefault(message.__module__, module)


def add_servicer_to_server(servicer, server: grpc.aio.Server) -> None:
    """Register every method of Triton's ``GRPCInferenceService`` on ``server`` (Ray's proxy passes a stand-in
    servicer and routes each method to the ingress), in a process that can then pickle its requests."""
    register_message_modules()
    add_to_server(servicer, server)


#: What ``gRPCOptions.grpc_servicer_functions`` names: the function above.
SERVICER_FUNCTION = f"{__name__}.{add_servicer_to_server.__name__}"
