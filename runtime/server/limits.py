"""Bounds on what one client may send, shared by the HTTP and gRPC adapters.

A request body (a gRPC message) is at most ``ServerSettings.max_body_bytes``;
byte counts that clients declare in headers are parsed strictly, so that a
header such as ``²`` (a digit to ``str.isdigit``, not to ``int``) or one of
5,000 digits is a client error, never the server's.
"""

from __future__ import annotations

import re

from .errors import BadRequestError, PayloadTooLargeError

# Up to 18 ASCII digits: every byte count below 10^18 (an exabyte), and int() of it never fails.
_BYTE_COUNT = re.compile(r"[0-9]{1,18}", re.ASCII)


def byte_count(what: str, text: str) -> int:
    """The byte count a client declared in ``what`` (a header's name).

    Raises:
        BadRequestError: not a plain decimal count of ASCII digits.
    """
    if not _BYTE_COUNT.fullmatch(text):
        raise BadRequestError(f"{what} must be a byte count in ASCII digits, received {text[:40]!r}")
    return int(text)


def check_size(what: str, size: int, limit: int) -> None:
    """Refuse ``what`` of ``size`` bytes when it is over ``limit``.

    Raises:
        PayloadTooLargeError: over the limit.
    """
    if size > limit:
        raise PayloadTooLargeError(f"{what} has {size} bytes, over the limit of {limit}")
