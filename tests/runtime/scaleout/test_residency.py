"""The residency policy without Ray: a byte budget, least recently used first, never an artifact in use, and a
failed load that changes nothing."""

from __future__ import annotations

import asyncio
import threading

import pytest

from popfuse.runtime.errors import ArtifactError
from popfuse.runtime.scaleout.residency import Prepared, Residency
from popfuse.runtime.server.errors import UnavailableError


class Shelf:
    """Artifacts of given sizes that open into named records; records who was opened and closed, in order,
    and tells the listener's events apart."""

    def __init__(self, sizes: dict[str, int], budget: int):
        self.sizes = sizes
        self.broken: set[str] = set()  # refused when prepared
        self.unopenable: set[str] = set()  # refused when opened
        self.events: list[tuple] = []
        self.routes: list[list[str]] = []
        self.open_gate = threading.Event()
        self.open_gate.set()
        self.residency: Residency[str] = Residency(budget, self.prepare, self.close, self)

    def prepare(self, name: str) -> Prepared[str]:
        if name in self.broken:
            raise ArtifactError(f"{name}: the contents are corrupt")

        def open_() -> str:
            self.open_gate.wait(10)
            if name in self.unopenable:
                raise ArtifactError(f"{name}: the engine refused it")
            self.events.append(("open", name))
            return f"<{name}>"

        return Prepared(self.sizes[name], open_)

    def close(self, value: str) -> None:
        self.events.append(("close", value.strip("<>")))

    # the Listener
    def routed(self, names: list[str]) -> None:
        self.routes.append(names)

    def loaded(self, name: str, size: int, seconds: float) -> None:
        self.events.append(("loaded", name, size))

    def evicted(self, name: str, size: int) -> None:
        self.events.append(("evicted", name, size))

    def failed(self, name: str, error: BaseException) -> None:
        self.events.append(("failed", name))

    async def run(self, *names: str) -> list[str]:
        out = []
        for name in names:
            async with self.residency.use(name) as value:
                out.append(value)
        return out


def test_least_recently_used_bytes_leave_first_and_only_as_many_as_needed():
    shelf = Shelf({"a": 40, "b": 30, "c": 30, "d": 60}, budget=100)

    async def main():
        assert await shelf.run("a", "b", "c", "a") == ["<a>", "<b>", "<c>", "<a>"]
        await shelf.run("d")  # 60 more: b (LRU, 30) and c (30) leave; a, used last, stays
        return shelf.residency.stats()

    stats = asyncio.run(main())
    assert [e for e in shelf.events if e[0] == "evicted"] == [("evicted", "b", 30), ("evicted", "c", 30)]
    assert stats.resident == {"a": (40, 0), "d": (60, 0)} and stats.resident_bytes == 100
    assert (stats.loads, stats.evictions, stats.load_failures) == (4, 2, 0)
    assert shelf.routes[-1] == ["a", "d"]


def test_an_artifact_in_use_is_never_evicted_an_idle_one_goes_first():
    shelf = Shelf({"a": 50, "b": 50, "c": 50}, budget=100)

    async def main():
        await shelf.run("a", "b")  # a is the least recently used
        async with shelf.residency.use("a"):  # ... and now in use: b, idle, is the victim
            await shelf.run("c")
            assert ("close", "a") not in shelf.events
        return shelf.residency.stats()

    stats = asyncio.run(main())
    assert [e[1] for e in shelf.events if e[0] == "evicted"] == ["b"]
    assert set(stats.resident) == {"a", "c"}


def test_a_load_that_needs_a_busy_artifact_waits_for_its_requests_and_takes_no_new_ones():
    shelf = Shelf({"a": 60, "b": 60}, budget=100)
    order = []

    async def main():
        await shelf.run("a")
        release = asyncio.Event()

        async def long_request():
            async with shelf.residency.use("a"):
                order.append("a running")
                await release.wait()
                order.append("a done")

        running = asyncio.create_task(long_request())
        await asyncio.sleep(0)
        loading = asyncio.create_task(shelf.run("b"))  # needs a's room: a drains
        for _ in range(20):
            await asyncio.sleep(0.01)
        assert not loading.done() and ("close", "a") not in shelf.events
        assert shelf.routes[-1] == ["b"]  # a, draining, is no longer routed here; b is loading
        late = asyncio.create_task(shelf.run("a"))  # waits for a to go, then loads it again
        await asyncio.sleep(0.05)
        assert not late.done()
        order.append("release")
        release.set()
        await running
        await loading
        order.append("b served")
        await late
        order.append("a served again")

    asyncio.run(main())
    assert order == ["a running", "release", "a done", "b served", "a served again"]
    assert [e[:2] for e in shelf.events if e[0] in ("open", "close")] == [
        ("open", "a"), ("close", "a"), ("open", "b"), ("close", "b"), ("open", "a")]


@pytest.mark.parametrize("where", ["broken", "unopenable"])
def test_a_failed_load_is_reported_to_everyone_waiting(where):
    shelf = Shelf({"a": 50, "b": 50, "c": 50}, budget=100)
    getattr(shelf, where).add("c")

    async def main():
        await shelf.run("a", "b")
        shelf.open_gate.clear()
        waiting = [asyncio.create_task(shelf.run("c")) for _ in range(3)]
        await asyncio.sleep(0.05)
        shelf.open_gate.set()
        results = await asyncio.gather(*waiting, return_exceptions=True)
        assert all(isinstance(r, ArtifactError) for r in results), results
        return await shelf.run("a", "b"), shelf.residency.stats()

    served, stats = asyncio.run(main())
    assert served == ["<a>", "<b>"] and stats.load_failures == 1
    if where == "broken":  # refused before any room was made: the replica serves what it had
        assert stats.evictions == 0 and set(stats.resident) == {"a", "b"} and stats.loads == 2
    else:  # refused by the engine after room was made: the victim came back on its next request
        assert stats.evictions >= 1 and set(stats.resident) == {"a", "b"}
    assert ("failed", "c") in shelf.events and shelf.routes[-1] == ["a", "b"]


def test_an_artifact_larger_than_the_budget_is_refused_and_nothing_moves():
    shelf = Shelf({"a": 50, "huge": 101}, budget=100)

    async def main():
        await shelf.run("a")
        with pytest.raises(UnavailableError, match=r"'huge' takes 101 B, more than this replica's whole budget"):
            await shelf.run("huge")
        return shelf.residency.stats()

    stats = asyncio.run(main())
    assert stats.resident == {"a": (50, 0)} and stats.evictions == 0


def test_requests_to_resident_artifacts_go_on_while_another_loads():
    shelf = Shelf({"a": 10, "b": 10}, budget=100)

    async def main():
        await shelf.run("a")
        shelf.open_gate.clear()
        loading = asyncio.create_task(shelf.run("b"))
        await asyncio.sleep(0.02)
        served = await asyncio.wait_for(shelf.run("a", "a", "a"), 1)  # not behind b's load
        shelf.open_gate.set()
        await loading
        return served

    assert asyncio.run(main()) == ["<a>"] * 3


def test_a_load_survives_the_request_that_started_it_going_away():
    shelf = Shelf({"a": 10}, budget=100)

    async def main():
        shelf.open_gate.clear()
        first = asyncio.create_task(shelf.run("a"))
        await asyncio.sleep(0.02)
        first.cancel()
        shelf.open_gate.set()
        with pytest.raises(asyncio.CancelledError):
            await first
        return await shelf.run("a")

    assert asyncio.run(main()) == ["<a>"]
    assert [e for e in shelf.events if e[0] == "open"] == [("open", "a")]


def test_close_waits_for_requests_then_closes_everything_and_refuses_more():
    shelf = Shelf({"a": 10, "b": 10}, budget=100)

    async def main():
        await shelf.run("a", "b")
        async with shelf.residency.use("a"):
            closing = asyncio.create_task(shelf.residency.close())
            await asyncio.sleep(0.02)
            assert ("close", "a") not in shelf.events
        await closing
        with pytest.raises(UnavailableError, match="shutting down"):
            await shelf.run("a")
        return shelf.residency.stats()

    stats = asyncio.run(main())
    assert {e[1] for e in shelf.events if e[0] == "close"} == {"a", "b"}
    assert stats.resident == {} and stats.evictions == 0
