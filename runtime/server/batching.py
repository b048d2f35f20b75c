"""Dynamic batching, as a wrapper the data plane attaches to a model when it loads.

Requests to one model are stacked on dimension 0 and run together. A batch
closes when it holds ``max_batch_size`` rows or when its first request has
waited ``max_queue_delay`` seconds. Requests whose other dimensions differ run
in separate batches. The batcher knows nothing of the protocol: arrays in,
arrays out.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .model import BlockingModel, Served
from .settings import BatchingConfig
from .stats import ModelStats

#: Starts a task the caller keeps until it ends (the data plane's ``spawn``).
Spawn = Callable[[Coroutine[Any, Any, Any]], asyncio.Task]


@dataclass
class _Item:
    inputs: dict[str, np.ndarray]
    rows: int
    future: asyncio.Future
    queued: int = field(default_factory=time.perf_counter_ns)

    def key(self) -> tuple:
        return tuple((name, a.shape[1:], a.dtype.str) for name, a in sorted(self.inputs.items()))


class Batched(Served):
    """A batchable model whose requests are batched; runs batches on ``executor``, at most ``concurrency``
    at once. Its loop starts with the first request, in that request's event loop."""

    def __init__(
        self,
        model: BlockingModel,
        stats: ModelStats,
        executor: concurrent.futures.Executor,
        spawn: Spawn,
        max_batch_size: int,
        max_queue_delay: float,
        concurrency: int = 2,
    ):
        super().__init__(model, stats)
        self.max_batch_size = max_batch_size
        self.max_queue_delay = max_queue_delay
        self.batching = BatchingConfig(max_batch_size, round(max_queue_delay * 1e6))
        self._executor = executor
        self._spawn = spawn
        self._concurrency = concurrency
        self._pending: deque[_Item] = deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._arrived: asyncio.Event | None = None
        self._slots: asyncio.Semaphore | None = None
        self._closed = False

    async def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Queue one request and wait for its outputs."""
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
            self._arrived, self._slots = asyncio.Event(), asyncio.Semaphore(self._concurrency)
            self._spawn(self._run_batches())
        rows = next(iter(inputs.values())).shape[0]
        item = _Item(inputs, rows, self._loop.create_future())
        self._pending.append(item)
        self._arrived.set()
        return await item.future

    def close(self) -> None:
        """Stop once the queued requests have run; callable from any thread."""
        self._closed = True
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._arrived.set)

    async def _run_batches(self) -> None:
        while True:
            while not self._pending:
                if self._closed:
                    return
                self._arrived.clear()
                await self._arrived.wait()
            deadline = self._pending[0].queued / 1e9 + self.max_queue_delay
            while self._rows_ready() < self.max_batch_size and not self._closed:
                wait = deadline - time.perf_counter_ns() / 1e9
                if wait <= 0:
                    break
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), wait)
                except TimeoutError:
                    break
            batch = self._take()
            await self._slots.acquire()
            self._spawn(self._run(batch))

    def _rows_ready(self) -> int:
        first = self._pending[0].key()
        return sum(i.rows for i in self._pending if i.key() == first)

    def _take(self) -> list[_Item]:
        """The first request and those like it, up to ``max_batch_size`` rows; others stay queued."""
        first = self._pending[0]
        batch, rest, rows = [], deque(), 0
        for item in self._pending:
            if item.key() == first.key() and (not batch or rows + item.rows <= self.max_batch_size):
                batch.append(item)
                rows += item.rows
            else:
                rest.append(item)
        self._pending = rest
        return batch

    async def _run(self, batch: list[_Item]) -> None:
        try:
            outputs = await asyncio.get_running_loop().run_in_executor(self._executor, self._execute, batch)
            for item, result in zip(batch, outputs):
                if not item.future.done():
                    item.future.set_result(result)
        except Exception as e:  # delivered to every waiting request; the loop goes on
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(e)
        finally:
            self._slots.release()

    def _execute(self, batch: list[_Item]) -> list[dict[str, np.ndarray]]:
        start = time.perf_counter_ns()
        queue_ns = sum(start - item.queued for item in batch)
        if len(batch) == 1:
            gathered = start
            results = [self.model.predict(batch[0].inputs)]
            ran = time.perf_counter_ns()
        else:
            stacked = {name: np.concatenate([i.inputs[name] for i in batch]) for name in batch[0].inputs}
            gathered = time.perf_counter_ns()
            merged = self.model.predict(stacked)
            ran = time.perf_counter_ns()
            total = sum(i.rows for i in batch)
            if any(a.shape[:1] != (total,) for a in merged.values()):
                # Outputs not stacked on dimension 0 after all: run the requests one by one.
                results = [self.model.predict(i.inputs) for i in batch]
                gathered, ran = start, time.perf_counter_ns()
            else:
                bounds = np.cumsum([i.rows for i in batch])[:-1]
                parts = {name: np.split(a, bounds) for name, a in merged.items()}
                results = [{name: parts[name][k] for name in merged} for k in range(len(batch))]
        end = time.perf_counter_ns()
        self.stats.execution(len(batch), sum(i.rows for i in batch), queue_ns, gathered - start, ran - gathered,
                             end - ran)
        return results
