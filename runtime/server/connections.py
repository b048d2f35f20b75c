"""Bounded HTTP connections: a time limit for a request's headers and one for its body, and a cap on open
connections.

uvicorn closes a connection that stays idle between requests (its keep-alive
timeout) but has no limit on a request in progress: a client that sends half a
header line, or half a body, and then nothing, holds its connection and its
file descriptor for ever (Slowloris). ``GuardedProtocol`` is uvicorn's
httptools protocol with one timer per connection:

- from the moment a connection opens, or a new request on it begins, its
  headers must be complete within ``header_timeout_s``, else it gets a 408 and
  is closed;
- once the headers are in, the body must be complete within
  ``body_timeout_s``, else the connection is closed (the application sees the
  client disconnect);
- a connection past ``max_connections`` open at once gets a 503 and is closed.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .settings import ServerSettings

log = logging.getLogger(__name__)


def _response(status: int, reason: str, message: str) -> bytes:
    body = json.dumps({"error": message}).encode()
    return (f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
            "connection: close\r\n\r\n").encode() + body


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, with the time limits and the connection cap above."""

    def __init__(self, *args, settings: ServerSettings, **kwargs):
        super().__init__(*args, **kwargs)
        self._header_timeout = settings.header_timeout_s
        self._body_timeout = settings.body_timeout_s
        self._max_connections = settings.max_connections
        self._deadline: asyncio.TimerHandle | None = None
        self._in_body = False

    @classmethod
    def factory(cls, settings: ServerSettings) -> functools.partial:
        """What uvicorn's ``http`` setting takes: makes a protocol per connection."""
        return functools.partial(cls, settings=settings)

    def connection_made(self, transport: asyncio.Transport) -> None:
        super().connection_made(transport)
        if len(self.connections) > self._max_connections:
            log.warning("refused a connection: %d are open, the limit is %d", len(self.connections) - 1,
                        self._max_connections)
            self.transport.write(_response(503, "Service Unavailable",
                                           f"the server has {self._max_connections} connections open; retry later"))
            self.transport.close()
            return
        self._arm(self._header_timeout, self._headers_late)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._deadline is None:  # a new request on a kept-alive connection
            self._arm(self._header_timeout, self._headers_late)

    def on_headers_complete(self) -> None:
        self._in_body = True
        self._arm(self._body_timeout, self._body_late)
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._in_body = False
        self._disarm()
        super().on_message_complete()

    def on_response_complete(self) -> None:
        if not self._in_body:  # answered before its body was in (413, 404): the body's deadline still holds
            self._disarm()
        super().on_response_complete()

    def send_400_response(self, msg: str) -> None:
        # uvicorn answers a request it cannot parse in plain text; this server answers every error in JSON.
        self._disarm()
        self.transport.write(_response(400, "Bad Request", msg))
        self.transport.close()

    def _arm(self, seconds: float, callback) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, callback)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _headers_late(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            log.debug("closed a connection that sent no complete request headers in %.0f s", self._header_timeout)
            self.transport.write(_response(408, "Request Timeout",
                                           f"the request's headers took more than {self._header_timeout:g} s"))
            self.transport.close()

    def _body_late(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            log.debug("closed a connection whose request body took more than %.0f s", self._body_timeout)
            self.transport.close()
