"""One replica's artifacts: opened from the catalog on demand within the replica's memory budget, their
models run on the replica's threads. The Ray deployment (``deployments.Artifacts``) is a thin shell around
it; everything here runs, and is tested, without Ray.
"""

from __future__ import annotations

import concurrent.futures
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..artifact import Artifact, ArtifactHeader
from ..config import RuntimeConfig
from ..errors import PopfuseError
from ..runner import Runner, check_artifact
from ..server.errors import ModelNotFoundError, UnavailableError
from ..server.model import Execution, SubgraphModel, execute, warm
from . import sources
from .catalog import Catalog
from .residency import Listener, Prepared, Residency


@dataclass
class Loaded:
    """An artifact opened on this replica: its runner, and its models by name."""

    runner: Runner
    models: dict[str, SubgraphModel]


class ArtifactHost:
    """The catalog's artifacts as one replica holds and runs them.

    Args:
        catalog: What may be loaded, and the replica's budget, threads and workers.
        listener: Told of routing changes, loads, evictions and failures (``residency.Listener``).
        cache: Where artifacts from URIs are copied on this node; None: ``sources.default_cache()``.
    """

    def __init__(self, catalog: Catalog, listener: Listener | None = None, cache: Path | None = None):
        self.catalog = catalog
        self._config = RuntimeConfig(validate_io_params=False, intra_op_num_threads=catalog.replicas.threads,
                                     trusted_keys=catalog.replicas.trusted_keys)
        self._cache = cache or sources.default_cache()
        self._executor = concurrent.futures.ThreadPoolExecutor(catalog.replicas.workers,
                                                               thread_name_prefix="popfuse-replica")
        self.residency: Residency[Loaded] = Residency(catalog.replicas.memory_budget, self._prepare,
                                                      lambda loaded: loaded.runner.close(), listener)

    async def infer(self, artifact: str, model: str, inputs: dict[str, np.ndarray]) -> Execution:
        """Run one checked request for ``model`` of ``artifact``, loading the artifact first if needed.

        The queue time counts the wait for a load and for a free worker.
        """
        queued = time.perf_counter_ns()
        self._known(artifact)
        async with self.residency.use(artifact) as loaded:
            subgraph = loaded.models.get(model)
            if subgraph is None:
                raise ModelNotFoundError(f"artifact {artifact!r} has no model {model!r}; its models are "
                                         f"{', '.join(loaded.models)}")
            return await execute(self._executor, subgraph, inputs, queued)

    async def load(self, artifact: str) -> list[str]:
        """Hold ``artifact`` (loading it if needed); returns its models' names."""
        self._known(artifact)
        async with self.residency.use(artifact) as loaded:
            return list(loaded.models)

    async def close(self) -> None:
        """Close every artifact once its requests have finished, then release the threads."""
        await self.residency.close()
        self._executor.shutdown(wait=True)

    def _known(self, artifact: str) -> None:
        if artifact not in self.catalog.artifacts:
            raise ModelNotFoundError(f"unknown artifact {artifact!r}; the catalog has "
                                     f"{', '.join(self.catalog.artifacts)}")

    def _prepare(self, name: str) -> Prepared[Loaded]:
        """Fetch (from a URI) and check the artifact, and that it is still the one the catalog read, without
        opening it: a failure here leaves the replica as it was."""
        entry = self.catalog.artifacts[name]
        try:
            path = sources.local_copy(entry.source, self._cache)
            artifact = check_artifact(path, self._config)
            if sources.local_path(entry.source) is None and not _same(artifact, entry.header):
                path = sources.local_copy(entry.source, self._cache, refresh=True)  # the cached copy is stale
                artifact = check_artifact(path, self._config)
        except PopfuseError as e:
            raise UnavailableError(f"artifact {name!r} failed to load: {e}") from e
        if not _same(artifact, entry.header):
            raise UnavailableError(
                f"artifact {name!r} at {entry.source} changed after the catalog was read (it serves "
                f"{', '.join(s.name for s in artifact.fusion_map.subgraphs)} now, from other sources or builds); "
                "redeploy the catalog to serve it"
            )

        def open_() -> Loaded:
            runner = Runner(path, self._config, checked=artifact)
            models = {m.name: m for m in (SubgraphModel(name, runner, i) for i in range(len(runner.subgraphs)))}
            for model in models.values():
                warm(model)
            return Loaded(runner, models)

        return Prepared(entry.size, open_)


def _same(artifact: Artifact, header: ArtifactHeader) -> bool:
    return artifact.metadata == header.metadata and artifact.fusion_map == header.fusion_map
