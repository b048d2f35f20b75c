"""The catalog: the artifacts a Ray deployment serves, each replica's memory budget, and how the two
deployments scale, from YAML validated before anything starts::

    artifacts:                      # name: a path (relative to this file) or a URI that every node can read
      ocr: artifacts/ocr.popef
      shop: s3://models/shop.popef
    replicas:                       # the replicas that hold artifacts and run their models
      memory_budget: 512 MiB        # artifact bytes one replica may hold (required)
      num_replicas: 2               # or autoscaling_config: {min_replicas: 1, max_replicas: 8}
      max_ongoing_requests: 8
      ray_actor_options: {num_cpus: 1}
      threads: 1                    # onnxruntime intra-op threads per execution (default: its own)
      workers: 1                    # requests one replica runs at once (default: its CPUs, at least 1)
      trusted_keys: [keys/ops.pub]  # load only artifacts signed by one of these Ed25519 keys (default: any)
    ingress:                        # the replicas that speak KServe v2 (HTTP and gRPC) and route requests
      num_replicas: 1
      ray_actor_options: {num_cpus: 0.5}
      max_pending: 256              # requests queued or running in one ingress replica before 503
      max_body_bytes: 67108864      # larger request bodies get 413
      http_restricted_api: ["model-repository,statistics:admin-key=s3cret"]   # Triton's restricted APIs
      grpc_restricted_api: ["model-repository,statistics:admin-key=s3cret"]   # (default: every API open)

Each artifact's header is read here: its models (named by its fusion map) and its size. A model name is
served by one artifact; an artifact larger than the budget could never load. ``num_replicas``,
``autoscaling_config``, ``max_ongoing_requests`` and ``ray_actor_options`` pass to Ray Serve as they are.
"""

from __future__ import annotations

import difflib
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..artifact import ArtifactHeader
from ..display import human_size
from ..errors import ArtifactError
from ..server.access import Restriction, Restrictions
from ..server.errors import ServerConfigError
from ..signing import public_key
from . import sources

#: The options that pass to Ray Serve's ``Deployment.options`` unchanged.
RAY_OPTIONS = ("num_replicas", "autoscaling_config", "max_ongoing_requests", "ray_actor_options")
_TOP = ("artifacts", "replicas", "ingress")
_REPLICAS = (*RAY_OPTIONS, "memory_budget", "threads", "workers", "trusted_keys")
_INGRESS = (*RAY_OPTIONS, "max_pending", "max_body_bytes", "http_restricted_api", "grpc_restricted_api")
_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


class CatalogError(ServerConfigError):
    """The catalog is malformed, or names an artifact that cannot be served: the message names the entry."""


@dataclass(frozen=True)
class CatalogArtifact:
    """One artifact of the catalog: its name (the multiplexed model id), where it is, and its header."""

    name: str
    source: str
    header: ArtifactHeader

    @property
    def size(self) -> int:
        """Its bytes: what it takes of a replica's budget."""
        return self.header.size

    @property
    def models(self) -> list[str]:
        """Its models' names, in index order."""
        return [s.name for s in self.header.fusion_map.subgraphs]


@dataclass(frozen=True)
class ReplicaSettings:
    """The replicas that hold artifacts.

    Attributes:
        memory_budget: Artifact bytes one replica may hold at once.
        threads: onnxruntime intra-op threads per execution; None: onnxruntime's default.
        workers: Requests one replica runs at once.
        trusted_keys: The contents of the public key files whose signers' artifacts alone load (any, when
            empty), read where the catalog is read: the replicas need not see the files.
        ray: Options for Ray Serve's ``Deployment.options``.
    """

    memory_budget: int
    threads: int | None = None
    workers: int = 1
    trusted_keys: tuple[bytes, ...] = ()
    ray: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class IngressSettings:
    """The replicas that speak KServe v2.

    Attributes:
        max_pending: Requests queued or running in one ingress replica; more get 503.
        max_body_bytes: Larger request bodies get 413.
        http_restricted: API groups whose HTTP requests need a header (Triton's restricted APIs).
        grpc_restricted: API groups whose gRPC calls need a metadata key.
        ray: Options for Ray Serve's ``Deployment.options``.
    """

    max_pending: int = 256
    max_body_bytes: int = 64 * 1024 * 1024
    http_restricted: tuple[Restriction, ...] = ()
    grpc_restricted: tuple[Restriction, ...] = ()
    ray: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Catalog:
    """A validated catalog: artifacts by name, and the settings of the two deployments."""

    path: str
    artifacts: dict[str, CatalogArtifact]
    replicas: ReplicaSettings
    ingress: IngressSettings = IngressSettings()

    def owner(self, model: str) -> CatalogArtifact | None:
        """The artifact that serves ``model``, or None."""
        return next((a for a in self.artifacts.values() if model in a.models), None)


def load_catalog(path: str | os.PathLike) -> Catalog:
    """Read and validate a catalog file, reading every artifact's header (and nothing more of it).

    Raises:
        CatalogError: the file is unreadable or malformed, an artifact is missing or unreadable, two
            artifacts serve one model name, or the budget is smaller than an artifact. The message names
            the entry.
    """
    path = Path(path)
    label = str(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise CatalogError(f"{label}: no such catalog file") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise CatalogError(f"{label}: cannot read the catalog: {e}") from e
    if not isinstance(data, dict):
        raise CatalogError(f"{label}: expected a mapping with 'artifacts' and 'replicas', received {data!r}"[:300])
    _known(label, "", data, _TOP)
    raw_artifacts = data.get("artifacts")
    if not isinstance(raw_artifacts, dict) or not raw_artifacts:
        raise CatalogError(f"{label}: 'artifacts' must map each artifact's name to its path or URI")
    artifacts = {}
    for name, source in raw_artifacts.items():
        where = f"{label}: artifacts.{name}"
        if not isinstance(name, str) or not name:
            raise CatalogError(f"{label}: artifact names must be non-empty strings, received {name!r}")
        if not isinstance(source, str) or not source:
            raise CatalogError(f"{where}: expected a path or URI, received {source!r}")
        if sources.local_path(source) is not None and not sources.local_path(source).is_absolute():
            source = str(path.parent / source)
        try:
            header = sources.source_header(source)
        except ArtifactError as e:
            raise CatalogError(f"{where}: {e}") from e
        artifacts[name] = CatalogArtifact(name, source, header)
    _check_models(label, artifacts)
    replicas = _replicas(label, _section(label, data, "replicas", required=True), path.parent)
    for artifact in artifacts.values():
        if artifact.size > replicas.memory_budget:
            raise CatalogError(
                f"{label}: replicas.memory_budget is {human_size(replicas.memory_budget)}, smaller than artifact "
                f"{artifact.name!r} ({human_size(artifact.size)}): no replica could hold it; raise the budget to "
                f"at least {artifact.size} bytes"
            )
    return Catalog(label, artifacts, replicas, _ingress(label, _section(label, data, "ingress")))


def parse_size(text: object) -> int | None:
    """Bytes from an integer or a string such as ``512 MiB`` or ``2GB``; None when it is neither."""
    if isinstance(text, int) and not isinstance(text, bool):
        return text
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", text) if isinstance(text, str) else None
    if match is None or match.group(2).lower() not in _UNITS:
        return None
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def _check_models(label: str, artifacts: dict[str, CatalogArtifact]) -> None:
    owners: dict[str, str] = {}
    for artifact in artifacts.values():
        for model in artifact.models:
            if model in owners:
                raise CatalogError(
                    f"{label}: artifacts {owners[model]!r} and {artifact.name!r} both serve a model named {model!r}; "
                    "a model name must belong to one artifact (rebuild one with distinct 'name' keys)"
                )
            owners[model] = artifact.name


def _section(label: str, data: dict, key: str, required: bool = False) -> dict:
    section = data.get(key)
    if section is None and not required:
        return {}
    if not isinstance(section, dict):
        need = " with at least memory_budget" if key == "replicas" else ""
        raise CatalogError(f"{label}: '{key}' must be a mapping{need}, received {section!r}")
    _known(label, f"{key}.", section, _REPLICAS if key == "replicas" else _INGRESS)
    return section


def _known(label: str, prefix: str, section: Mapping, allowed: tuple[str, ...]) -> None:
    for key in section:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(allowed)}"
            raise CatalogError(f"{label}: unknown key {prefix}{key}{hint}")


def _trusted_keys(label: str, value: object, folder: Path) -> tuple[bytes, ...]:
    """The key files' contents, each checked to hold an Ed25519 public key; paths are relative to ``folder``."""
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise CatalogError(f"{label}: replicas.trusted_keys must be a list of public key files (PEM or OpenSSH), "
                           f"received {value!r}"[:300])
    keys = []
    for i, name in enumerate(value):
        key = folder / name
        try:
            public_key(key)
            keys.append(key.read_bytes())
        except (ArtifactError, OSError) as e:
            raise CatalogError(f"{label}: replicas.trusted_keys[{i}]: {e}") from e
    return tuple(keys)


def _replicas(label: str, section: dict, folder: Path) -> ReplicaSettings:
    if "memory_budget" not in section:
        raise CatalogError(f"{label}: replicas.memory_budget is required: the artifact bytes one replica may hold "
                           "(an integer, or a string such as '512 MiB')")
    budget = parse_size(section["memory_budget"])
    if budget is None or budget < 1:
        raise CatalogError(f"{label}: replicas.memory_budget must be a positive byte count such as 536870912 or "
                           f"'512 MiB', received {section['memory_budget']!r}")
    ray = _ray_options(label, "replicas", section)
    cpus = ray.get("ray_actor_options", {}).get("num_cpus", 1)
    default_workers = max(1, math.ceil(cpus)) if isinstance(cpus, (int, float)) else 1
    return ReplicaSettings(
        memory_budget=budget,
        threads=_positive(label, "replicas.threads", section.get("threads"), None),
        workers=_positive(label, "replicas.workers", section.get("workers"), default_workers),
        trusted_keys=_trusted_keys(label, section.get("trusted_keys"), folder),
        ray=ray,
    )


def _ingress(label: str, section: dict) -> IngressSettings:
    defaults = IngressSettings()
    return IngressSettings(
        max_pending=_positive(label, "ingress.max_pending", section.get("max_pending"), defaults.max_pending),
        max_body_bytes=_positive(label, "ingress.max_body_bytes", section.get("max_body_bytes"),
                                 defaults.max_body_bytes),
        http_restricted=_restricted(label, "ingress.http_restricted_api", section.get("http_restricted_api")),
        grpc_restricted=_restricted(label, "ingress.grpc_restricted_api", section.get("grpc_restricted_api")),
        ray=_ray_options(label, "ingress", section),
    )


def _restricted(label: str, key: str, value: object) -> tuple[Restriction, ...]:
    """Triton's restricted APIs from a list of ``API[,API...]:KEY=VALUE`` (``popfuse serve``'s flags)."""
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(spec, str) for spec in value):
        raise CatalogError(f"{label}: {key} must be a list of 'API[,API...]:KEY=VALUE' strings, received {value!r}")
    try:
        restrictions = tuple(Restriction.parse(spec) for spec in value)
        Restrictions(restrictions)  # refuses a group restricted twice
    except ServerConfigError as e:
        raise CatalogError(f"{label}: {key}: {e}") from e
    return restrictions


def _ray_options(label: str, key: str, section: dict) -> dict[str, Any]:
    """The options for Ray, with the types Ray expects (Ray checks their values when the app deploys)."""
    options = {k: section[k] for k in RAY_OPTIONS if k in section}
    replicas = options.get("num_replicas")
    if replicas is not None and replicas != "auto":
        _positive(label, f"{key}.num_replicas", replicas, None)
    _positive(label, f"{key}.max_ongoing_requests", options.get("max_ongoing_requests"), None)
    for mapping in ("autoscaling_config", "ray_actor_options"):
        if mapping in options and not isinstance(options[mapping], dict):
            raise CatalogError(f"{label}: {key}.{mapping} must be a mapping, received {options[mapping]!r}")
    if isinstance(replicas, int) and "autoscaling_config" in options:
        raise CatalogError(f"{label}: {key} sets both num_replicas and autoscaling_config; a fixed number of "
                           "replicas or autoscaling, not both")
    return options


def _positive(label: str, key: str, value: object, default: int | None) -> int | None:
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise CatalogError(f"{label}: {key} must be a whole number of at least 1, received {value!r}")
    return value
