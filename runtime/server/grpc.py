"""KServe v2 over gRPC (``inference.GRPCInferenceService``): a thin ``grpc.aio`` adapter over the data plane.

The messages and the servicer base class are the stubs ``tritonclient`` ships
(``service_pb2``, ``service_pb2_grpc``, ``model_config_pb2``), generated from
Triton's own protocol files: the server speaks exactly what Triton's clients
send, with no generated code kept here.

``InferenceServicer`` takes a data plane and can be registered on any
``grpc.aio`` server: with ``add_to_server`` here (which answers a message that
does not parse with INVALID_ARGUMENT), or with the stubs' own
``add_GRPCInferenceServiceServicer_to_server``. ``start_server`` starts one on
the settings' port.

This module owns the only table of gRPC status codes.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import numpy as np
from google.protobuf import json_format, message_factory
from google.protobuf.message import DecodeError
from tritonclient.grpc import model_config_pb2, service_pb2, service_pb2_grpc

from ..dtypes import kserve_from_numpy
from ..errors import BackendError, ExecutionError
from .access import Restrictions
from .dataplane import DataPlane
from .errors import (
    BadRequestError,
    ForbiddenError,
    ModelControlError,
    ModelNotFoundError,
    OverloadedError,
    PayloadTooLargeError,
    ServerConfigError,
    UnavailableError,
    UnsupportedError,
)
from .protocol import InferRequest, InferResponse, tensor_from_bytes, tensor_from_values
from .settings import ServerSettings

log = logging.getLogger(__name__)

SERVICE = "inference.GRPCInferenceService"
#: Calls one gRPC connection may have in flight at once (HTTP/2's recommended minimum, nginx's is 128).
MAX_STREAMS = 100

STATUS: dict[type[Exception], grpc.StatusCode] = {
    BadRequestError: grpc.StatusCode.INVALID_ARGUMENT,
    ExecutionError: grpc.StatusCode.INVALID_ARGUMENT,  # the model rejected an input that passed the checks
    UnsupportedError: grpc.StatusCode.UNIMPLEMENTED,
    ForbiddenError: grpc.StatusCode.PERMISSION_DENIED,
    ModelControlError: grpc.StatusCode.FAILED_PRECONDITION,
    ModelNotFoundError: grpc.StatusCode.NOT_FOUND,
    PayloadTooLargeError: grpc.StatusCode.RESOURCE_EXHAUSTED,
    BackendError: grpc.StatusCode.INTERNAL,  # the engine failed for a reason that is not the request's
    ServerConfigError: grpc.StatusCode.INTERNAL,
    OverloadedError: grpc.StatusCode.UNAVAILABLE,
    UnavailableError: grpc.StatusCode.UNAVAILABLE,
}

# Where each datatype's values travel in InferTensorContents when a request does not send raw bytes.
# FP16 has no typed field: it travels as raw bytes only.
_CONTENTS = {
    "BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents",
    "INT64": "int64_contents", "UINT8": "uint_contents", "UINT16": "uint_contents", "UINT32": "uint_contents",
    "UINT64": "uint64_contents", "FP32": "fp32_contents", "FP64": "fp64_contents",
}


def _status(e: Exception) -> tuple[grpc.StatusCode, str]:
    for cls, code in STATUS.items():
        if isinstance(e, cls):
            return code, str(e)
    log.exception("internal error")
    return grpc.StatusCode.INTERNAL, f"internal error: {type(e).__name__}: {e}"


class Malformed:
    """A request message that did not parse, handed to the servicer in its place."""

    def __init__(self, error: Exception):
        self.error = error

    def refuse(self) -> BadRequestError:
        return BadRequestError(f"the request is not a valid protobuf message of its type: {self.error}")


def decode_request(request: service_pb2.ModelInferRequest | Malformed) -> InferRequest:
    """The protocol request of a ``ModelInferRequest``: raw bytes per input, or typed contents.

    Raises:
        BadRequestError: a malformed message or tensor.
    """
    if isinstance(request, Malformed):
        raise request.refuse()
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise BadRequestError(f"the request has {len(request.inputs)} inputs but {len(raw)} raw_input_contents; "
                              "send one raw_input_contents per input, in input order, or none")
    inputs: dict[str, np.ndarray] = {}
    for position, tensor in enumerate(request.inputs):
        name, shape = tensor.name, list(tensor.shape)
        if name in inputs:
            raise BadRequestError(f"input {name!r} appears twice in the request")
        if raw:
            if tensor.HasField("contents"):
                raise BadRequestError(f"input {name!r} has both contents and raw_input_contents; send one")
            inputs[name] = tensor_from_bytes(name, tensor.datatype, shape, raw[position])
            continue
        field = _CONTENTS.get(tensor.datatype)
        if field is None:
            raise BadRequestError(f"input {name!r}: datatype {tensor.datatype!r} has no typed contents here; "
                                  "send it in raw_input_contents")
        inputs[name] = tensor_from_values(name, tensor.datatype, shape, list(getattr(tensor.contents, field)))
    if not inputs:
        raise BadRequestError("the request has no inputs")
    outputs = [o.name for o in request.outputs] or None
    return InferRequest(inputs=inputs, id=request.id or None, outputs=outputs)


def encode_response(response: InferResponse) -> service_pb2.ModelInferResponse:
    """A ``ModelInferResponse`` with every output's bytes in ``raw_output_contents``, as Triton answers."""
    message = service_pb2.ModelInferResponse(model_name=response.model_name, model_version=response.model_version,
                                             id=response.id or "")
    for name, array in response.outputs.items():
        array = np.ascontiguousarray(array)
        message.outputs.add(name=name, datatype=kserve_from_numpy(array.dtype), shape=array.shape)
        message.raw_output_contents.append(array.tobytes())
    return message


def _rpc(group: str) -> Callable:
    """A servicer method behind the restriction of API ``group``, its domain errors turned into statuses."""

    def wrap(method: Callable) -> Callable:
        @functools.wraps(method)
        async def call(self: InferenceServicer, request: Any, context: grpc.aio.ServicerContext) -> Any:
            try:
                self.check(group, context)
                if isinstance(request, Malformed):
                    raise request.refuse()
                return await method(self, request, context)
            except Exception as e:  # mapped to a status by the table above
                await context.abort(*_status(e))

        return call

    return wrap


def _unsupported(group: str, what: str) -> Callable:
    """An RPC of API ``group`` that answers UNIMPLEMENTED: this server does not offer ``what``."""

    @_rpc(group)
    async def refuse(self: InferenceServicer, request: Any, context: grpc.aio.ServicerContext) -> None:
        raise UnsupportedError.feature(what)

    return refuse


class InferenceServicer(service_pb2_grpc.GRPCInferenceServiceServicer):
    """Every RPC of ``inference.GRPCInferenceService``, served by ``dataplane``.

    Args:
        dataplane: What serves the requests (the HTTP adapter may share it).
        restrictions: API groups that need a metadata key; None: every group open.
    """

    def __init__(self, dataplane: DataPlane, restrictions: Restrictions | None = None):
        self.dataplane = dataplane
        self.restrictions = restrictions or Restrictions()

    def check(self, group: str, context: grpc.aio.ServicerContext) -> None:
        """Raise ForbiddenError unless the call may reach API ``group``."""
        if self.restrictions:
            metadata = {key: value for key, value in (context.invocation_metadata() or ())}
            self.restrictions.check(group, metadata.get)

    # -- health and metadata ------------------------------------------------------------

    @_rpc("health")
    async def ServerLive(self, request, context):
        return service_pb2.ServerLiveResponse(live=self.dataplane.live())

    @_rpc("health")
    async def ServerReady(self, request, context):
        return service_pb2.ServerReadyResponse(ready=self.dataplane.ready())

    @_rpc("health")
    async def ModelReady(self, request, context):
        try:
            ready = self.dataplane.model_ready(request.name, request.version)
        except ModelNotFoundError:
            ready = False
        return service_pb2.ModelReadyResponse(ready=ready)

    @_rpc("metadata")
    async def ServerMetadata(self, request, context):
        return json_format.ParseDict(self.dataplane.server_metadata(), service_pb2.ServerMetadataResponse())

    @_rpc("metadata")
    async def ModelMetadata(self, request, context):
        metadata = self.dataplane.model_metadata(request.name, request.version)
        return json_format.ParseDict(metadata, service_pb2.ModelMetadataResponse())

    @_rpc("model-config")
    async def ModelConfig(self, request, context):
        config = self.dataplane.model_config(request.name, request.version)
        return service_pb2.ModelConfigResponse(config=json_format.ParseDict(config, model_config_pb2.ModelConfig()))

    @_rpc("statistics")
    async def ModelStatistics(self, request, context):
        statistics = self.dataplane.statistics(request.name or None, request.version)
        return json_format.ParseDict(statistics, service_pb2.ModelStatisticsResponse())

    # -- inference --------------------------------------------------------------------------

    @_rpc("inference")
    async def ModelInfer(self, request, context):
        return await self._infer(request)

    async def _infer(self, request: service_pb2.ModelInferRequest | Malformed) -> service_pb2.ModelInferResponse:
        infer_request = decode_request(request)
        response = await self.dataplane.infer(request.model_name, infer_request, request.model_version)
        return encode_response(response)

    async def ModelStreamInfer(self, request_iterator, context) -> AsyncIterator[service_pb2.ModelStreamInferResponse]:
        """Each request of the stream runs as it arrives; each answer (or error) is sent as it is ready, so
        answers may come out of order (their ``id`` says which is which), as Triton's do."""
        try:
            self.check("inference", context)
        except ForbiddenError as e:
            await context.abort(*_status(e))
        answers: asyncio.Queue = asyncio.Queue()

        async def answer(request) -> None:
            try:
                reply = service_pb2.ModelStreamInferResponse(infer_response=await self._infer(request))
            except Exception as e:  # a failed request is an error message on the stream, which goes on
                reply = service_pb2.ModelStreamInferResponse(error_message=_status(e)[1])
            await answers.put(reply)

        async def read() -> None:
            running = set()
            async for request in request_iterator:
                task = asyncio.ensure_future(answer(request))
                running.add(task)
                task.add_done_callback(running.discard)
            if running:
                await asyncio.gather(*running)
            await answers.put(None)

        reader = asyncio.ensure_future(read())
        try:
            while (reply := await answers.get()) is not None:
                yield reply
            await reader  # raises what reading the stream raised
        finally:
            reader.cancel()

    # -- repository ------------------------------------------------------------------------

    @_rpc("model-repository")
    async def RepositoryIndex(self, request, context):
        entries = self.dataplane.repository.index()
        fields = ("name", "version", "state", "reason")
        models = [{k: e[k] for k in fields} for e in entries if not request.ready or e["state"] == "READY"]
        return json_format.ParseDict({"models": models}, service_pb2.RepositoryIndexResponse())

    @_rpc("model-repository")
    async def RepositoryModelLoad(self, request, context):
        await self.dataplane.load(request.model_name)
        return service_pb2.RepositoryModelLoadResponse()

    @_rpc("model-repository")
    async def RepositoryModelUnload(self, request, context):
        await self.dataplane.unload(request.model_name)
        return service_pb2.RepositoryModelUnloadResponse()

    # -- what this server does not offer ------------------------------------------------------

    SystemSharedMemoryStatus = _unsupported("shared-memory", "system shared memory")
    SystemSharedMemoryRegister = _unsupported("shared-memory", "system shared memory")
    SystemSharedMemoryUnregister = _unsupported("shared-memory", "system shared memory")
    CudaSharedMemoryStatus = _unsupported("shared-memory", "CUDA shared memory")
    CudaSharedMemoryRegister = _unsupported("shared-memory", "CUDA shared memory")
    CudaSharedMemoryUnregister = _unsupported("shared-memory", "CUDA shared memory")
    TraceSetting = _unsupported("trace", "tracing")
    LogSettings = _unsupported("logging", "changing log settings")


def _parser(message_class) -> Callable[[bytes], Any]:
    """``message_class.FromString``, giving a ``Malformed`` for bytes that do not parse (gRPC's own
    deserialisation would answer those with INTERNAL, a server error)."""

    def parse(data: bytes) -> Any:
        try:
            return message_class.FromString(data)
        except (DecodeError, ValueError) as e:
            return Malformed(e)

    return parse


def add_to_server(servicer: InferenceServicer, server: grpc.aio.Server) -> None:
    """Register ``servicer`` on ``server`` for every method of the service."""
    service = service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    handlers = {}
    for method in service.methods:
        request_class = message_factory.GetMessageClass(method.input_type)
        response_class = message_factory.GetMessageClass(method.output_type)
        make = grpc.stream_stream_rpc_method_handler if method.client_streaming else grpc.unary_unary_rpc_method_handler
        handlers[method.name] = make(getattr(servicer, method.name), request_deserializer=_parser(request_class),
                                     response_serializer=response_class.SerializeToString)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))


def server_options(settings: ServerSettings) -> list[tuple[str, int]]:
    """gRPC core's channel arguments for the bounds in ``settings``."""
    return [
        ("grpc.max_receive_message_length", settings.max_body_bytes),
        ("grpc.max_send_message_length", -1),
        # gRPC sets SO_REUSEPORT by default: a second server on a busy port would start and share it silently.
        # Worker processes share the port so on purpose (their supervisor checked first that it was free).
        ("grpc.so_reuseport", int(settings.worker_processes > 1)),
        # The connection's HTTP/2 preface and settings must arrive in the headers' time.
        ("grpc.server_handshake_timeout_ms", int(settings.header_timeout_s * 1000)),
        # Calls in flight per connection (HTTP/2's SETTINGS_MAX_CONCURRENT_STREAMS; unbounded by default). The
        # server-wide bound is the data plane's --max-pending: grpc.aio's own maximum_concurrent_rpcs costs
        # every call a Python-level lock, about 15% of a small model's throughput here.
        ("grpc.max_concurrent_streams", MAX_STREAMS),
        # As over HTTP: at most --max-connections open at once (gRPC core closes the ones past it as they
        # arrive), and a connection that has had no call in flight for the body's time is closed (a client
        # reconnects on its next call), so connections that open and then send nothing cannot pile up.
        ("grpc.max_allowed_incoming_connections", settings.max_connections),
        ("grpc.max_connection_idle_ms", int(settings.body_timeout_s * 1000)),
    ]


async def start_server(dataplane: DataPlane, settings: ServerSettings) -> grpc.aio.Server:
    """A started ``grpc.aio`` server for ``dataplane`` on ``settings.host``:``settings.grpc_port``.

    Raises:
        ServerConfigError: the port cannot be bound.
    """
    server = grpc.aio.server(options=server_options(settings))
    add_to_server(InferenceServicer(dataplane, Restrictions(settings.grpc_restricted)), server)
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    address = f"{host}:{settings.grpc_port}"
    refused = ServerConfigError(f"cannot listen for gRPC on {address}: the port is in use, or the address is not "
                                f"this machine's; choose another --grpc-port (or --host)")
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError as e:
        raise refused from e
    if bound == 0:  # older grpcio reports a failed bind so
        raise refused
    await server.start()
    return server
