"""The model repository: artifacts loaded as runners, their subgraphs served as models.

A load is atomic: the runner is opened and every branch warmed before any of
its models is published, and publishing swaps them in under one lock, so
requests to other models never wait for a load and never see half of one.
Unloading removes the models; requests already holding them finish.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..config import RuntimeConfig
from ..errors import PopfuseError
from ..runner import Runner
from .errors import BadRequestError, ModelNotFoundError, ServerConfigError, UnavailableError
from .model import BlockingModel, Model, SubgraphModel, warm

log = logging.getLogger(__name__)

#: Artifact files by name, or a sequence of paths (named after their stems) and (name, path) pairs.
Artifacts = Mapping[str, "str | os.PathLike"] | Sequence["str | os.PathLike | tuple[str, str | os.PathLike]"]


@dataclass
class ArtifactEntry:
    """An artifact the repository knows, loaded or not."""

    name: str
    path: Path
    state: str = "UNAVAILABLE"
    reason: str = ""
    models: list[str] = field(default_factory=list)


class Repository:
    """Artifacts by name, and the models of those loaded.

    Args:
        artifacts: The artifact files it may load: by name, as (name, path) pairs, or as paths named after
            their files' stems.
        config: How each artifact's runner is opened.
        attach: Turns a loaded subgraph into the model served (``DataPlane.attach``).

    Raises:
        ServerConfigError: two artifacts with one name.
    """

    def __init__(self, artifacts: Artifacts, config: RuntimeConfig, attach: Callable[[BlockingModel], Model]):
        self._config = config
        self._attach = attach
        self._lock = threading.Lock()
        self._loading = threading.Lock()  # one load at a time; serving goes on meanwhile
        self._models: dict[str, Model] = {}
        self._artifacts: dict[str, ArtifactEntry] = {}
        named = artifacts.items() if isinstance(artifacts, Mapping) else (
            item if isinstance(item, tuple) else (Path(item).stem, item) for item in artifacts)
        for name, path in named:
            path = Path(path)
            if name in self._artifacts:
                raise ServerConfigError(
                    f"two artifacts are named {name!r}: {self._artifacts[name].path} and {path}; name them: "
                    f"popfuse serve a={self._artifacts[name].path} b={path}"
                )
            self._artifacts[name] = ArtifactEntry(name, path)

    def load(self, name: str) -> list[str]:
        """Load (or reload) artifact ``name``; returns the names of its models.

        Raises:
            ModelNotFoundError: no artifact of that name.
            UnavailableError: the artifact cannot be opened here.
            BadRequestError: a model name clashes with another artifact's.
        """
        entry = self._entry(name)
        with self._loading:
            try:
                runner = Runner(entry.path, self._config)
            except PopfuseError as e:
                entry.state, entry.reason = "UNAVAILABLE", str(e)
                raise UnavailableError(f"artifact {name!r} failed to load: {e}") from e
            loaded = [SubgraphModel(name, runner, i) for i in range(len(runner.subgraphs))]
            for model in loaded:
                warm(model)
            models = [self._attach(model) for model in loaded]
            with self._lock:
                for model in models:
                    owner = self._models.get(model.name)
                    if owner is not None and owner.artifact != name:
                        raise BadRequestError(
                            f"artifact {name!r} has a model {model.name!r}, which artifact {owner.artifact!r} "
                            "already serves; rebuild one of them with distinct 'name' keys"
                        )
                for old in entry.models:
                    self._models.pop(old).close()
                self._models.update({m.name: m for m in models})
                entry.models = [m.name for m in models]
                entry.state, entry.reason = "READY", ""
        log.info("loaded artifact %r: models %s", name, ", ".join(entry.models))
        return list(entry.models)

    def unload(self, name: str) -> None:
        """Stop serving artifact ``name``'s models; requests already running finish."""
        entry = self._entry(name)
        with self._lock:
            for model in entry.models:
                self._models.pop(model).close()
            entry.models = []
            entry.state, entry.reason = "UNAVAILABLE", "unloaded"
        log.info("unloaded artifact %r", name)

    def get(self, model: str) -> Model:
        """The model named ``model``."""
        with self._lock:
            found = self._models.get(model)
        if found is None:
            loaded = ", ".join(sorted(self._models)) or "none"
            raise ModelNotFoundError(f"unknown model {model!r}; loaded models: {loaded}")
        return found

    def models(self) -> list[Model]:
        with self._lock:
            return list(self._models.values())

    def index(self) -> list[dict]:
        """Triton's repository index: every artifact and model, with its state."""
        out = []
        with self._lock:
            for entry in self._artifacts.values():
                out.append({"name": entry.name, "version": "1", "state": entry.state, "reason": entry.reason,
                            "models": list(entry.models)})
                for model in entry.models:
                    out.append({"name": model, "version": "1", "state": "READY", "reason": "", "artifact": entry.name})
        return out

    def _entry(self, name: str) -> ArtifactEntry:
        entry = self._artifacts.get(name)
        if entry is None:
            known = ", ".join(self._artifacts) or "none"
            raise ModelNotFoundError(f"unknown artifact {name!r}; known artifacts: {known}")
        return entry


class FixedRepository:
    """A repository of given models, served as they are: nothing to load or unload.

    For a server over models made in the process (the benchmark's baseline of plain sessions), where
    there is no artifact to load.
    """

    def __init__(self, models: list[BlockingModel], attach: Callable[[BlockingModel], Model]):
        self._models: dict[str, Model] = {m.name: attach(m) for m in models}

    def get(self, name: str) -> Model:
        if name not in self._models:
            raise ModelNotFoundError(f"unknown model {name!r}; models: {', '.join(self._models) or 'none'}")
        return self._models[name]

    def models(self) -> list[Model]:
        return list(self._models.values())

    def index(self) -> list[dict]:
        return [{"name": n, "version": "1", "state": "READY", "reason": ""} for n in self._models]

    def load(self, name: str) -> list[str]:
        """Nothing to load: the model is served already."""
        return [self.get(name).name]

    def unload(self, name: str) -> None:
        raise BadRequestError(f"model {name!r} is one of this server's fixed models; it cannot be unloaded")
