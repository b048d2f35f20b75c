"""The ingress's repository without Ray: the data plane over the catalog's models, forwarded to a replica's
host in this process. Models are described from the headers alone, as `popfuse serve` describes them loaded."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from popfuse.runtime.config import RuntimeConfig
from popfuse.runtime.scaleout.catalog import load_catalog
from popfuse.runtime.scaleout.host import ArtifactHost
from popfuse.runtime.scaleout.remote import CatalogRepository
from popfuse.runtime.server.dataplane import DataPlane
from popfuse.runtime.server.errors import BadRequestError, ModelNotFoundError
from popfuse.runtime.server.protocol import InferRequest
from popfuse.runtime.server.repository import Repository
from popfuse.runtime.server.settings import ServerSettings


@pytest.fixture
def ingress(shelf, tmp_path):
    """Builds (inside a running loop) a data plane over the catalog whose requests run on ``host``."""
    catalog = load_catalog(shelf.catalog(tmp_path / "c.yaml"))
    host = ArtifactHost(catalog)
    forwarded = []

    async def forward(artifact, model, inputs):
        forwarded.append((artifact, model))
        return await host.infer(artifact, model, inputs)

    def make() -> DataPlane:
        loop = asyncio.get_running_loop()
        warm = lambda name: asyncio.run_coroutine_threadsafe(host.load(name), loop).result()  # noqa: E731
        return DataPlane(ServerSettings(workers=1), lambda attach: CatalogRepository(catalog, forward, attach, warm))

    return make, host, forwarded


def test_requests_run_on_the_host_and_are_counted_here(shelf, ingress):
    make, host, forwarded = ingress

    async def main():
        dataplane = make()
        for model in ("a0m0", "a2m1"):
            feeds = next(w.feeds for ws in shelf.models.values() for w in ws if w.name == model)
            response = await dataplane.infer(model, InferRequest(inputs=feeds))
            (output,) = response.outputs.values()
            np.testing.assert_allclose(output, shelf.reference(model, feeds), rtol=1e-5, atol=1e-6)
        with pytest.raises(BadRequestError, match=r"model 'a0m0', input 'X': expected shape \[1, 32\]"):
            await dataplane.infer("a0m0", InferRequest(inputs={"X": np.zeros((1, 3), np.float32)}))
        with pytest.raises(ModelNotFoundError, match="unknown model 'zz'"):
            await dataplane.infer("zz", InferRequest(inputs={"X": np.zeros((1, 3), np.float32)}))
        stats = dataplane.statistics("a2m1")["model_stats"][0]
        await dataplane.close()
        return stats

    stats = asyncio.run(main())
    assert forwarded == [("a0", "a0m0"), ("a2", "a2m1")]  # the bad request never left the ingress
    assert stats["inference_count"] == stats["execution_count"] == 1
    assert stats["inference_stats"]["compute_infer"]["ns"] > 0 and stats["inference_stats"]["queue"]["ns"] > 0


def test_metadata_from_the_headers_is_what_a_loaded_server_reports(shelf, ingress):
    make, _, forwarded = ingress

    async def main():
        remote = make()
        local = DataPlane(ServerSettings(workers=1), lambda attach: Repository(
            list(shelf.paths.values()), RuntimeConfig(validate_io_params=False), attach))
        for entry in local.repository.index():
            local.load_now(entry["name"])
        models = [m.name for m in local.repository.models()]
        return [(remote.model_metadata(m), local.model_metadata(m)) for m in models], len(models)

    pairs, count = asyncio.run(main())
    assert count == 9 and all(a == b for a, b in pairs) and not forwarded


def test_the_repository_index_load_and_unload(shelf, ingress):
    make, host, _ = ingress

    async def main():
        dataplane = make()
        index = dataplane.repository.index()
        assert await dataplane.load("a1") == ["a1m0", "a1m1", "a1m2"]
        with pytest.raises(BadRequestError, match="'a1' is not unloaded on request here: each replica evicts"):
            await dataplane.unload("a1")
        with pytest.raises(ModelNotFoundError, match="unknown artifact 'a7'"):
            await dataplane.load("a7")
        return index, dataplane.ready()

    index, ready = asyncio.run(main())
    names = [*("a0", "a1", "a2"), *(f"{a}m{k}" for a in ("a0", "a1", "a2") for k in range(3))]
    assert {e["name"]: e["state"] for e in index} == dict.fromkeys(names, "READY")
    assert ready and host.residency.stats().loads == 1
