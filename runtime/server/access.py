"""Triton's restricted APIs: groups of endpoints a request reaches only with a given header.

``--http-restricted-api model-repository,statistics:admin-key=s3cret`` means a
request to the repository or statistics endpoints must carry the header
``admin-key: s3cret`` (over gRPC: the metadata key ``admin-key``); without it the
request is refused and changes nothing. Both adapters share these groups and
this check; each maps its endpoints to a group.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from .errors import ForbiddenError, ServerConfigError

#: Triton's API groups (``RESTRICTED_CATEGORY_NAMES``), in its order.
API_GROUPS = (
    "health", "metadata", "inference", "shared-memory", "model-config", "model-repository", "statistics", "trace",
    "logging",
)

# An HTTP header name (RFC 9110 token); gRPC metadata keys are the lower-case subset, so keys are kept lower-case.
_KEY = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


@dataclass(frozen=True)
class Restriction:
    """API groups that need ``key: value`` in a request's headers (or gRPC metadata)."""

    groups: frozenset[str]
    key: str
    value: str

    @classmethod
    def parse(cls, spec: str) -> Restriction:
        """``API[,API…]:KEY=VALUE``, Triton's ``--http-restricted-api`` syntax.

        Raises:
            ServerConfigError: malformed, or an unknown API group.
        """
        apis, sep, header = spec.partition(":")
        key, eq, value = header.partition("=")
        if not sep or not eq or not apis or not value:
            raise ServerConfigError(f"restricted API {spec!r}: expected API[,API...]:KEY=VALUE, "
                                    "e.g. model-repository,statistics:admin-key=s3cret")
        groups = [g.strip() for g in apis.split(",")]
        unknown = [g for g in groups if g not in API_GROUPS]
        if unknown:
            raise ServerConfigError(f"restricted API {spec!r}: unknown API group(s) {', '.join(map(repr, unknown))}; "
                                    f"the groups are {', '.join(API_GROUPS)}")
        if not _KEY.fullmatch(key):
            raise ServerConfigError(f"restricted API {spec!r}: the key {key!r} is not a valid header name")
        return cls(frozenset(groups), key.lower(), value)


class Restrictions:
    """Which API groups need which header; by default none does.

    Raises:
        ServerConfigError: a group restricted twice (Triton refuses that too).
    """

    def __init__(self, restrictions: Iterable[Restriction] = ()):
        self._by_group: dict[str, Restriction] = {}
        for restriction in restrictions:
            for group in sorted(restriction.groups):
                if group in self._by_group:
                    raise ServerConfigError(f"API group {group!r} is restricted twice; give each group one key")
                self._by_group[group] = restriction

    def __bool__(self) -> bool:
        return bool(self._by_group)

    def restricted(self) -> dict[str, str]:
        """The restricted groups and the header each needs."""
        return {group: r.key for group, r in sorted(self._by_group.items())}

    def check(self, group: str, header: Callable[[str], str | None]) -> None:
        """Refuse the request unless ``group`` is open or ``header(key)`` gives the key's value.

        Raises:
            ForbiddenError: the group is restricted and the header is missing or wrong.
        """
        restriction = self._by_group.get(group)
        if restriction is None:
            return
        given = header(restriction.key)
        if given is None or not hmac.compare_digest(given.encode(), restriction.value.encode()):
            raise ForbiddenError(
                f"the {group} API is restricted on this server: send the {restriction.key!r} header with its value"
            )
