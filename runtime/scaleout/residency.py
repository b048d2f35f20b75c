"""Which artifacts one replica holds: a budget in bytes, the least recently used out first, never one in use.

Ray Serve's own multiplexing (``@serve.multiplexed``) keeps a number of models per replica and, asked for
one more, unloads the least recently used whether requests are running on it or not, after which a failed
load leaves the replica with one model fewer. Artifacts differ in size by orders of magnitude, and an
artifact's size is known from its header before it loads, so the budget here is in bytes, with these rules:

1. A request leases its artifact (``use``) and runs while holding the lease; an artifact with leases is
   never evicted.
2. A load first *prepares* the artifact (reads and checks it, which leaves no memory behind): a failure
   there evicts nothing, and the replica goes on serving what it had. An artifact larger than the whole
   budget is refused at this step too.
3. Then room is made: victims in least-recently-used order, idle ones before busy ones, until the new
   artifact fits. A victim takes no new leases (it is *draining*), and is closed once its last lease ends.
4. Then the artifact opens; a failure here (the engine refused it) is reported, and the victims come back
   on their next request.
5. One load at a time; requests to resident artifacts go on meanwhile, and requests to the artifact being
   loaded wait for it (and get its error if it fails). A load runs to its end even if the request that
   started it goes away.
6. Routing: the listener hears the artifacts that requests should be sent to this replica for (those
   resident or loading, not those draining) each time that set changes.

The policy is plain asyncio, with blocking steps (prepare, open, close) run on threads; it knows nothing of
Ray or of what an artifact is.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from ..display import human_size
from ..server.errors import UnavailableError

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class Prepared(Generic[T]):
    """An artifact checked and ready to open: the bytes it takes, and how to open it (blocking)."""

    size: int
    open: Callable[[], T]


class Listener(Protocol):
    """What a replica is told about its residency (Ray's routing table and metrics listen here)."""

    def routed(self, names: list[str]) -> None:
        """The artifacts to route to this replica changed: now ``names``."""

    def loaded(self, name: str, size: int, seconds: float) -> None:
        """Artifact ``name`` of ``size`` bytes loaded in ``seconds``."""

    def evicted(self, name: str, size: int) -> None:
        """Artifact ``name`` was closed to make room."""

    def failed(self, name: str, error: BaseException) -> None:
        """Loading artifact ``name`` failed; nothing else changed."""


class _State(enum.Enum):
    LOADING = "loading"
    RESIDENT = "resident"
    DRAINING = "draining"


@dataclass(eq=False)
class _Entry(Generic[T]):
    name: str
    state: _State = _State.LOADING
    size: int = 0
    value: T | None = None
    leases: int = 0
    idle: asyncio.Event = field(default_factory=asyncio.Event)
    gone: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task | None = None


@dataclass(frozen=True)
class ResidencyStats:
    """A replica's residency now, and what it has done since it started.

    Attributes:
        budget: The bytes it may hold.
        resident_bytes: The bytes it holds (draining artifacts included, until they close).
        resident: Artifact name → (bytes, requests in flight), for those resident or draining.
        loads, evictions, load_failures: Counts since the replica started.
        load_seconds: Total time spent opening artifacts; ``/ loads`` is the mean load latency.
        load_seconds_max: The longest load.
    """

    budget: int
    resident_bytes: int
    resident: dict[str, tuple[int, int]]
    loads: int
    evictions: int
    load_failures: int
    load_seconds: float
    load_seconds_max: float


class Residency(Generic[T]):
    """The artifacts one replica holds, within ``budget`` bytes (the rules are the module's).

    Args:
        budget: Bytes of artifacts held at once.
        prepare: Reads and checks artifact ``name`` (blocking); raises to refuse it.
        close: Releases an opened artifact (blocking).
        listener: Told of routing changes, loads, evictions and failures.
    """

    def __init__(self, budget: int, prepare: Callable[[str], Prepared[T]], close: Callable[[T], None],
                 listener: Listener | None = None):
        self.budget = budget
        self._prepare, self._close, self._listener = prepare, close, listener
        self._entries: OrderedDict[str, _Entry[T]] = OrderedDict()  # least recently used first
        self._loading = asyncio.Lock()
        self._used = 0
        self._routed: list[str] | None = None
        self._closing = False
        self._loads = self._evictions = self._failures = 0
        self._load_seconds = self._load_seconds_max = 0.0

    @contextlib.asynccontextmanager
    async def use(self, name: str) -> AsyncIterator[T]:
        """Lease artifact ``name`` for the ``with`` block, loading it first if it is not held.

        Raises:
            UnavailableError: the replica is shutting down, or the artifact is larger than the budget.
            Whatever ``prepare`` or opening the artifact raised, when this request's load failed.
        """
        entry = await self._lease(name)
        try:
            yield entry.value
        finally:
            entry.leases -= 1
            if entry.leases == 0:
                entry.idle.set()

    def stats(self) -> ResidencyStats:
        """What the replica holds now, and its counts."""
        resident = {e.name: (e.size, e.leases) for e in self._entries.values() if e.state is not _State.LOADING}
        return ResidencyStats(self.budget, self._used, resident, self._loads, self._evictions, self._failures,
                              self._load_seconds, self._load_seconds_max)

    async def close(self) -> None:
        """Take no new leases; close every artifact once its requests have finished."""
        self._closing = True
        if self._entries:
            async with self._loading:
                for entry in list(self._entries.values()):
                    if entry.state is not _State.LOADING:
                        await self._evict(entry, count=False)
        self._route()

    async def _lease(self, name: str) -> _Entry[T]:
        while True:
            if self._closing:
                raise UnavailableError("the replica is shutting down; retry")
            entry = self._entries.get(name)
            if entry is None:
                entry = _Entry(name)
                self._entries[name] = entry
                entry.task = asyncio.get_running_loop().create_task(self._load(entry))
                # Its error reaches the requests that wait for it; one no request waited for is only logged.
                entry.task.add_done_callback(lambda task: task.cancelled() or task.exception())
                self._route()
            if entry.state is _State.RESIDENT:
                entry.leases += 1
                entry.idle.clear()
                self._entries.move_to_end(name)
                return entry
            if entry.state is _State.LOADING:
                await asyncio.shield(entry.task)  # the load's own error, when it fails
            else:
                await entry.gone.wait()  # draining: load it again once it is closed

    async def _load(self, entry: _Entry[T]) -> None:
        try:
            async with self._loading:
                if self._closing:
                    raise UnavailableError("the replica is shutting down; retry")
                prepared = await asyncio.to_thread(self._prepare, entry.name)
                if prepared.size > self.budget:
                    raise UnavailableError(
                        f"artifact {entry.name!r} takes {human_size(prepared.size)}, more than this replica's "
                        f"whole budget of {human_size(self.budget)}"
                    )
                await self._make_room(prepared.size)
                start = time.monotonic()
                value = await asyncio.to_thread(prepared.open)
                seconds = time.monotonic() - start
        except BaseException as e:
            del self._entries[entry.name]
            entry.gone.set()
            self._failures += 1
            self._route()
            log.warning("artifact %r failed to load: %s", entry.name, e)
            if self._listener is not None:
                self._listener.failed(entry.name, e)
            raise
        entry.value, entry.size, entry.state = value, prepared.size, _State.RESIDENT
        self._used += prepared.size
        self._loads += 1
        self._load_seconds += seconds
        self._load_seconds_max = max(self._load_seconds_max, seconds)
        log.info("loaded artifact %r (%s) in %.3f s; holding %s of %s", entry.name, human_size(prepared.size),
                 seconds, human_size(self._used), human_size(self.budget))
        if self._listener is not None:
            self._listener.loaded(entry.name, prepared.size, seconds)
        self._route()

    async def _make_room(self, size: int) -> None:
        """Evict until ``size`` more bytes fit: least recently used first, idle before busy, each once idle."""
        while self._used + size > self.budget:
            need = self._used + size - self.budget
            resident = [e for e in self._entries.values() if e.state is _State.RESIDENT]
            victims, freed = [], 0
            for entry in sorted(resident, key=lambda e: e.leases > 0):  # stable: LRU order within each group
                if freed >= need:
                    break
                victims.append(entry)
                freed += entry.size
            for entry in victims:
                entry.state = _State.DRAINING
            self._route()
            for entry in victims:
                await self._evict(entry)

    async def _evict(self, entry: _Entry[T], count: bool = True) -> None:
        """Close ``entry`` once its requests have finished (rule 1); ``count`` it as an eviction."""
        entry.state = _State.DRAINING
        if entry.leases:
            await entry.idle.wait()  # cleared by the first lease, set by the last one's end
        try:
            await asyncio.to_thread(self._close, entry.value)
        except Exception:  # a release that fails still ends the artifact's residency
            log.exception("closing artifact %r failed", entry.name)
        del self._entries[entry.name]
        self._used -= entry.size
        entry.gone.set()
        if not count:
            return
        self._evictions += 1
        log.info("evicted artifact %r (%s)", entry.name, human_size(entry.size))
        if self._listener is not None:
            self._listener.evicted(entry.name, entry.size)

    def _route(self) -> None:
        names = sorted(n for n, e in self._entries.items() if e.state is not _State.DRAINING)
        if names != self._routed and self._listener is not None:
            self._listener.routed(names)
        self._routed = names
