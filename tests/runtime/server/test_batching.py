"""Batching as a wrapper: requests stacked on dimension 0, split back, errors delivered, and a clean stop."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from popfuse.runtime.errors import ExecutionError
from popfuse.runtime.server.batching import Batched
from popfuse.runtime.server.dataplane import DataPlane
from popfuse.runtime.server.model import Threaded
from popfuse.runtime.server.repository import FixedRepository
from popfuse.runtime.server.settings import BatchingConfig, ServerSettings
from tests.runtime.server.toys import ErrorModel, SumModel


def batching_plane(*models, size=8, delay_us=50_000) -> DataPlane:
    settings = ServerSettings(workers=2, default_batching=BatchingConfig(size, delay_us))
    return DataPlane(settings, lambda attach: FixedRepository(list(models), attach))


async def send(model, rows: list[list[float]]):
    return await model.infer({"X": np.asarray(rows, np.float32)})


def test_the_data_plane_attaches_batching_only_where_asked_and_possible():
    dp = batching_plane(SumModel())
    assert isinstance(dp.repository.get("sum"), Batched)
    fixed = SumModel()
    fixed.inputs[0] = fixed.inputs[0].__class__("X", np.dtype(np.float32), (2, 4))  # no dynamic batch dimension
    assert isinstance(batching_plane(fixed).repository.get("sum"), Threaded)
    plain = DataPlane(ServerSettings(), lambda attach: FixedRepository([SumModel()], attach))
    assert isinstance(plain.repository.get("sum"), Threaded)


def test_concurrent_requests_run_as_one_batch_and_each_gets_its_rows():
    toy = SumModel()

    async def main():
        dp = batching_plane(toy)
        model = dp.repository.get("sum")
        results = await asyncio.gather(*(send(model, [[k, 0, 0, 0]] * (1 + k % 2)) for k in range(6)))
        await dp.close()
        return results, dp

    results, dp = asyncio.run(main())
    for k, out in enumerate(results):
        np.testing.assert_array_equal(out["O"], [k] * (1 + k % 2))
    assert toy.executions == [7, 2]  # 9 rows: a batch may hold 8, and the last request's 2 do not fit
    (stats,) = dp.statistics()["model_stats"]
    assert stats["execution_count"] == 2 and stats["inference_count"] == 9


def test_requests_of_other_shapes_wait_for_their_own_batch():
    toy = SumModel(width=-1)  # any width

    async def main():
        dp = batching_plane(toy, size=8, delay_us=20_000)
        model = dp.repository.get("sum")
        results = await asyncio.gather(send(model, [[1, 1, 1, 1]]), send(model, [[2, 2]] * 3),
                                       send(model, [[3, 3, 3, 3]]))
        await dp.close()
        return results

    a, b, c = asyncio.run(main())
    np.testing.assert_array_equal(a["O"], [4])
    np.testing.assert_array_equal(b["O"], [4, 4, 4])
    np.testing.assert_array_equal(c["O"], [12])
    assert sorted(toy.executions) == [2, 3]  # the two of width 4 together, the three of width 2 apart


def test_a_failure_reaches_every_request_of_its_batch_and_the_next_batch_runs():
    async def main():
        dp = batching_plane(ErrorModel(), size=4)
        model = dp.repository.get("error")
        results = await asyncio.gather(send(model, [[-1, 0, 0, 0]]), send(model, [[1, 0, 0, 0]]),
                                       return_exceptions=True)
        after = await send(model, [[2, 0, 0, 0]])
        await dp.close()
        return results, after

    results, after = asyncio.run(main())
    assert all(isinstance(r, ExecutionError) for r in results)
    np.testing.assert_array_equal(after["O"], [2])


def test_closing_runs_what_is_queued_then_ends_every_task():
    toy = SumModel()

    async def main():
        dp = batching_plane(toy, size=64, delay_us=200_000)
        model = dp.repository.get("sum")
        pending = asyncio.ensure_future(send(model, [[3, 0, 0, 0]]))
        await asyncio.sleep(0.01)
        await dp.close()  # well before the 200 ms delay: the queued request still runs
        return await pending, dp

    out, dp = asyncio.run(main())
    np.testing.assert_array_equal(out["O"], [3])
    assert toy.executions == [1] and not dp._tasks


@pytest.mark.parametrize("size", [0, 1])
def test_a_batch_size_below_two_means_no_batching(size):
    dp = batching_plane(SumModel(), size=size)
    assert isinstance(dp.repository.get("sum"), Threaded)
