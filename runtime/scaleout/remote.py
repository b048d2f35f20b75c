"""The ingress's repository: the catalog's models, known from the artifacts' headers, each run on whichever
replica holds its artifact. Nothing loads in the ingress; a request is checked against the model's
inputs here and forwarded with its artifact's name, which routing uses to pick a replica.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import numpy as np

from ..server.dataplane import Attach
from ..server.errors import BadRequestError, ModelNotFoundError
from ..server.model import Execution, Model, RemoteModel, platform, subgraph_specs
from .catalog import Catalog, CatalogArtifact

#: Runs model ``name`` of artifact ``artifact`` on a replica that holds the artifact (or will load it).
Forward = Callable[[str, str, dict[str, np.ndarray]], Awaitable[Execution]]


class CatalogModel(RemoteModel):
    """Model ``index`` of a catalog artifact, run wherever ``forward`` sends it."""

    def __init__(self, artifact: CatalogArtifact, index: int, forward: Forward):
        header = artifact.header
        sub = header.fusion_map.subgraphs[index]
        self.name, self.artifact, self.platform = sub.name, artifact.name, platform(header.metadata)
        self.inputs, self.outputs = subgraph_specs(header.metadata, sub)
        self._forward = forward

    async def run(self, inputs: dict[str, np.ndarray]) -> Execution:
        return await self._forward(self.artifact, self.name, inputs)


class CatalogRepository:
    """Every model of the catalog, served through replicas: the data plane's repository in a Ray ingress.

    Args:
        catalog: The validated catalog.
        forward: Runs a request on a replica holding its artifact.
        attach: The data plane's ``attach``.
        warm: Has a replica hold an artifact (blocking); returns its models' names.
    """

    def __init__(self, catalog: Catalog, forward: Forward, attach: Attach, warm: Callable[[str], list[str]]):
        self._catalog = catalog
        self._warm = warm
        self._models: dict[str, Model] = {
            m.name: attach(m)
            for a in catalog.artifacts.values() for m in (CatalogModel(a, i, forward) for i in range(len(a.models)))
        }

    def get(self, name: str) -> Model:
        model = self._models.get(name)
        if model is None:
            raise ModelNotFoundError(f"unknown model {name!r}; models: {', '.join(sorted(self._models))}")
        return model

    def models(self) -> list[Model]:
        return list(self._models.values())

    def index(self) -> list[dict]:
        """Every artifact and model; all are READY, since a replica loads an artifact on its first request."""
        out = []
        for artifact in self._catalog.artifacts.values():
            out.append({"name": artifact.name, "version": "1", "state": "READY", "reason": "",
                        "models": artifact.models})
            out += [{"name": m, "version": "1", "state": "READY", "reason": "", "artifact": artifact.name}
                    for m in artifact.models]
        return out

    def load(self, name: str) -> list[str]:
        """Have a replica hold artifact ``name`` now rather than on its first request."""
        if name not in self._catalog.artifacts:
            raise ModelNotFoundError(f"unknown artifact {name!r}; the catalog has {', '.join(self._catalog.artifacts)}")
        return self._warm(name)

    def unload(self, name: str) -> None:
        raise BadRequestError(
            f"artifact {name!r} is not unloaded on request here: each replica evicts artifacts to stay within "
            "its memory budget; to stop serving one, remove it from the catalog and deploy again"
        )
