"""The server's domain errors. Status codes for them live in the adapters only: ``http.py`` and ``grpc.py``,
one table each."""

from __future__ import annotations

from ..errors import PopfuseError


class ServerError(PopfuseError):
    """Base of the errors the data plane raises at a client or operator."""


class BadRequestError(ServerError):
    """The request is malformed, or does not fit the model: the message says what and where."""


class ModelNotFoundError(ServerError):
    """No model (or artifact) of that name is loaded."""


class PayloadTooLargeError(ServerError):
    """The request body is over the configured limit."""


class ForbiddenError(ServerError):
    """The request belongs to a restricted API group and lacks the header (or metadata) that opens it."""


class UnsupportedError(ServerError):
    """The protocol has the call, but this server does not offer it (shared memory, tracing)."""

    @classmethod
    def feature(cls, what: str) -> UnsupportedError:
        return cls(f"{what} is not supported by this server; send tensors in the request itself")


class OverloadedError(ServerError):
    """Too many requests are queued; the client should retry later."""


class UnavailableError(ServerError):
    """The server is shutting down, or an artifact failed to load."""


class ModelControlError(ServerError):
    """Loading and unloading over the API are off: the server runs several worker processes, and a load would
    change only the one that received it."""


class WorkerError(ServerError):
    """A worker process failed to start, or kept crashing: the server stops."""


class ServerConfigError(ServerError):
    """The server's own configuration (flags, model config file) is malformed."""
