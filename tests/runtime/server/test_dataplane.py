"""The data plane without HTTP: inference, checks, admission, errors and statistics, on toy and real models."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from popfuse.runtime.config import RuntimeConfig
from popfuse.runtime.errors import BackendError, ExecutionError
from popfuse.runtime.server.dataplane import DataPlane
from popfuse.runtime.server.errors import (
    BadRequestError,
    ModelControlError,
    ModelNotFoundError,
    OverloadedError,
    UnavailableError,
)
from popfuse.runtime.server.protocol import InferRequest
from popfuse.runtime.server.repository import FixedRepository, Repository
from popfuse.runtime.server.settings import ServerSettings
from tests.models import PPOCR, ppocr_input, scale_model
from tests.runtime.server.toys import ErrorModel, RemoteSum, SlowModel, SumModel


def plane(*models, **settings) -> DataPlane:
    return DataPlane(ServerSettings(**settings), lambda attach: FixedRepository(list(models), attach))


def request(x, outputs=None) -> InferRequest:
    return InferRequest(inputs={"X": np.asarray(x, np.float32)}, outputs=outputs)


def test_a_request_runs_and_is_counted():
    async def main():
        dp = plane(SumModel())
        response = await dp.infer("sum", request([[1, 2, 3, 4], [1, 1, 1, 1]]))
        await dp.close()
        return dp, response

    dp, response = asyncio.run(main())
    np.testing.assert_array_equal(response.outputs["O"], [10, 4])
    (stats,) = dp.statistics()["model_stats"]
    assert stats["inference_count"] == 2 and stats["inference_stats"]["success"]["count"] == 1


def test_a_remote_model_is_checked_here_run_there_and_counted_with_its_times():
    remote = RemoteSum()

    async def main():
        dp = plane(remote)
        response = await dp.infer("remote", request([[1, 2, 3, 4], [0, 0, 0, 1]]))
        with pytest.raises(BadRequestError, match="expected shape"):
            await dp.infer("remote", request([[1, 2, 3]]))
        await dp.close()
        return dp, response

    dp, response = asyncio.run(main())
    np.testing.assert_array_equal(response.outputs["O"], [10, 1])
    assert remote.local.executions == [2]  # the bad request never left
    (stats,) = dp.statistics()["model_stats"]
    assert (stats["inference_count"], stats["execution_count"]) == (2, 1)
    assert stats["inference_stats"]["queue"] == {"count": 1, "ns": 1_000}
    assert stats["inference_stats"]["compute_infer"] == {"count": 1, "ns": 5_000}
    assert stats["inference_stats"]["fail"]["count"] == 1


def test_bad_requests_are_refused_before_anything_runs():
    toy = SumModel()

    async def main():
        dp = plane(toy)
        for bad, error, fragment in [
            (InferRequest(inputs={"Y": np.ones((1, 4), np.float32)}), BadRequestError, "no input 'Y'"),
            (request([[1, 2, 3]]), BadRequestError, "expected shape [?, 4], received [1, 3]"),
            (InferRequest(inputs={"X": np.ones((1, 4))}), BadRequestError, "expected dtype FP32, received FP64"),
            (request([[1, 2, 3, 4]], outputs=["Q"]), BadRequestError, "no output 'Q'"),
        ]:
            with pytest.raises(error, match=fragment.replace("[", r"\[").replace("?", r"\?")):
                await dp.infer("sum", bad)
        with pytest.raises(ModelNotFoundError):
            await dp.infer("nope", request([[1, 2, 3, 4]]))
        await dp.close()
        return dp

    dp = asyncio.run(main())
    assert toy.executions == []
    (stats,) = dp.statistics()["model_stats"]
    assert stats["inference_stats"]["fail"]["count"] == 4


def test_the_models_refusal_and_an_engine_failure_keep_their_classes():
    async def main():
        dp = plane(ErrorModel())
        with pytest.raises(ExecutionError, match="out of this model's domain"):
            await dp.infer("error", request([[-1, 0, 0, 0]]))
        with pytest.raises(BackendError, match="lost its device"):
            await dp.infer("error", request([[np.nan, 0, 0, 0]]))
        ok = await dp.infer("error", request([[1, 0, 0, 0]]))
        await dp.close()
        return ok

    np.testing.assert_array_equal(asyncio.run(main()).outputs["O"], [1])


def test_admission_is_bounded_and_closing_refuses_new_work():
    async def main():
        dp = plane(SlowModel(seconds=0.3), max_pending=1, workers=2)
        first = asyncio.ensure_future(dp.infer("slow", request([[1, 1, 1, 1]])))
        await asyncio.sleep(0.05)
        with pytest.raises(OverloadedError, match="the limit is 1"):
            await dp.infer("slow", request([[1, 1, 1, 1]]))
        await first
        await dp.close()
        with pytest.raises(UnavailableError, match="shutting down"):
            await dp.infer("slow", request([[1, 1, 1, 1]]))
        return dp

    assert not asyncio.run(main()).ready()


def test_loads_and_unloads_are_refused_when_several_worker_processes_serve(make_artifact):
    path = make_artifact([scale_model()], name="toys.popef")
    config = RuntimeConfig(validate_io_params=False)

    async def main():
        dp = DataPlane(ServerSettings(workers=1, worker_processes=3),
                       lambda attach: Repository([path], config, attach))
        dp.load_now("toys")  # the worker's own start
        for call in (dp.load, dp.unload):
            with pytest.raises(ModelControlError, match="this server runs 3 worker processes.*--worker-processes 1"):
                await call("toys")
        served = [e["state"] for e in dp.repository.index()]
        await dp.close()
        return served

    assert asyncio.run(main()) == ["READY", "READY"]


def test_real_artifact_models_through_the_repository(ppocr_build):
    settings = ServerSettings(workers=2)
    config = RuntimeConfig(validate_io_params=False)

    async def main():
        dp = DataPlane(settings, lambda attach: Repository([ppocr_build.popef_path], config, attach))
        assert await dp.load("executable") == list(PPOCR)
        got = {}
        for name in PPOCR:
            response = await dp.infer(name, InferRequest(inputs={"x": ppocr_input(name, seed=6)}))
            (got[name],) = response.outputs.values()
        metadata = dp.model_metadata("cls")
        await dp.close()
        return got, metadata

    got, metadata = asyncio.run(main())
    assert got["det"].max() > 0.5 and got["cls"].shape == (1, 2)
    assert metadata["platform"] == "popfuse_onnxruntime" and metadata["inputs"][0]["name"] == "x"
