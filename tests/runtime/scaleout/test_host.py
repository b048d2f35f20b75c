"""One replica's artifacts without Ray: real artifacts and runners, a budget of two artifacts, models checked
against onnxruntime on their sources, and failed loads that leave the replica as it was."""

from __future__ import annotations

import asyncio
import shutil

import numpy as np
import pytest

from popfuse.runtime.scaleout.catalog import load_catalog
from popfuse.runtime.scaleout.host import ArtifactHost
from popfuse.runtime.server.errors import ModelNotFoundError, UnavailableError


def request(shelf, model: str) -> dict[str, np.ndarray]:
    workload = next(w for ws in shelf.models.values() for w in ws if w.name == model)
    return workload.feeds


def test_every_model_answers_as_onnxruntime_and_the_budget_holds_two(shelf, storage, tmp_path):
    catalog = load_catalog(shelf.catalog(tmp_path / "c.yaml", artifacts={
        "a0": str(shelf.paths["a0"]), "a1": str(shelf.paths["a1"]), "a2": f"{storage}/a2.popef"}))
    host = ArtifactHost(catalog, cache=tmp_path / "cache")

    async def main():
        for artifact in ("a0", "a1", "a2", "a0"):
            for k in range(3):
                model = f"{artifact}m{k}"
                execution = await host.infer(artifact, model, request(shelf, model))
                (output,) = execution.outputs.values()
                np.testing.assert_allclose(output, shelf.reference(model, request(shelf, model)), rtol=1e-5,
                                           atol=1e-6)
                assert execution.compute_ns > 0 and execution.queue_ns > 0
        stats = host.residency.stats()
        await host.close()
        return stats

    stats = asyncio.run(main())
    # a0, a1 loaded; a2 (from the URI, copied into the cache) evicts a0; a0 again evicts a1.
    assert (stats.loads, stats.evictions) == (4, 2)
    assert set(stats.resident) == {"a2", "a0"} and stats.resident_bytes == shelf.sizes["a2"] + shelf.sizes["a0"]
    assert len(list((tmp_path / "cache").iterdir())) == 1


@pytest.mark.parametrize("damage, message", [
    ("corrupt", r"artifact 'a2' failed to load: .*a2.popef: blob \d+ at byte \d+: the contents are corrupt"),
    ("replaced", r"artifact 'a2' at .*a2.popef changed after the catalog was read \(it serves a1m0, a1m1, a1m2 now"),
    ("removed", r"artifact 'a2' failed to load: .*a2.popef: no such artifact file"),
])
def test_a_failed_load_leaves_the_replica_serving_what_it_had(shelf, tmp_path, damage, message):
    for name in ("a0", "a1", "a2"):
        shutil.copy(shelf.paths[name], tmp_path / f"{name}.popef")
    catalog = load_catalog(shelf.catalog(tmp_path / "c.yaml", artifacts={
        name: f"{name}.popef" for name in ("a0", "a1", "a2")}))
    broken = tmp_path / "a2.popef"
    if damage == "corrupt":
        data = bytearray(broken.read_bytes())
        data[-100] ^= 0xFF
        broken.write_bytes(bytes(data))
    elif damage == "replaced":
        shutil.copy(shelf.paths["a1"], broken)
    else:
        broken.unlink()
    host = ArtifactHost(catalog)

    async def main():
        await host.infer("a0", "a0m0", request(shelf, "a0m0"))
        await host.infer("a1", "a1m0", request(shelf, "a1m0"))
        with pytest.raises(UnavailableError, match=message):
            await host.infer("a2", "a2m0", request(shelf, "a2m0"))
        before = host.residency.stats()
        await host.infer("a0", "a0m1", request(shelf, "a0m1"))
        await host.infer("a1", "a1m1", request(shelf, "a1m1"))
        return before, host.residency.stats()

    before, after = asyncio.run(main())
    assert set(before.resident) == {"a0", "a1"} and before.evictions == 0 and before.load_failures == 1
    assert (after.loads, after.evictions) == (2, 0)  # still served, never reloaded


def test_unknown_artifacts_and_models(shelf, tmp_path):
    host = ArtifactHost(load_catalog(shelf.catalog(tmp_path / "c.yaml")))

    async def main():
        with pytest.raises(ModelNotFoundError, match="unknown artifact 'a9'; the catalog has a0, a1, a2"):
            await host.infer("a9", "a0m0", {})
        with pytest.raises(ModelNotFoundError, match="artifact 'a0' has no model 'a1m0'; its models are a0m0"):
            await host.infer("a0", "a1m0", {})
        assert await host.load("a1") == ["a1m0", "a1m1", "a1m2"]

    asyncio.run(main())


def test_a_replica_with_trusted_keys_loads_only_what_they_signed(shelf, tmp_path):
    from popfuse.runtime.artifact import read_artifact, write_artifact
    from popfuse.runtime.signing import signer
    from tests.runtime.test_signing import key_pair

    private, public = key_pair(tmp_path, "ops")
    write_artifact(tmp_path / "s0.popef", read_artifact(shelf.paths["a0"]), signer(private))
    catalog = load_catalog(shelf.catalog(tmp_path / "c.yaml", artifacts={"s0": "s0.popef",
                                                                          "a1": str(shelf.paths["a1"])},
                                         replicas={"memory_budget": "1 GiB", "trusted_keys": ["ops.pub"]}))
    assert catalog.replicas.trusted_keys == (public.read_bytes(),)
    host = ArtifactHost(catalog)

    async def main():
        (output,) = (await host.infer("s0", "a0m0", request(shelf, "a0m0"))).outputs.values()
        np.testing.assert_allclose(output, shelf.reference("a0m0", request(shelf, "a0m0")), rtol=1e-5, atol=1e-6)
        with pytest.raises(UnavailableError, match="a1.popef: the artifact is not signed"):
            await host.infer("a1", "a1m0", request(shelf, "a1m0"))
        await host.close()

    asyncio.run(main())
