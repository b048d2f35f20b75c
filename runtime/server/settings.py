"""Server settings, from flags and an optional per-model configuration file."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .access import Restriction
from .errors import ServerConfigError


@dataclass(frozen=True)
class BatchingConfig:
    """Dynamic batching of one model. ``max_batch_size`` of 0 or 1 turns it off.

    Attributes:
        max_batch_size: The most rows (dimension 0) one execution stacks.
        max_queue_delay_us: How long the first request of a batch may wait for others.
    """

    max_batch_size: int = 0
    max_queue_delay_us: int = 0

    @property
    def enabled(self) -> bool:
        return self.max_batch_size > 1


@dataclass(frozen=True)
class ServerSettings:
    """How the server runs. Field docs are the ``popfuse serve`` flags' help.

    Attributes:
        host: Address to listen on, for HTTP and gRPC (loopback unless told otherwise).
        port: HTTP port (Triton's default, 8000).
        grpc_port: gRPC port (Triton's default, 8001); None: no gRPC.
        max_body_bytes: Larger request bodies (gRPC messages) are refused: 413 (RESOURCE_EXHAUSTED).
        max_pending: Requests queued or running at once, across models; more get 503.
        workers: Threads that run models.
        intra_op_num_threads: onnxruntime intra-op threads per execution; None: its default.
        trusted_keys: Ed25519 public keys (paths, or a file's bytes); when given, only artifacts signed by one of
            them load, as ``RuntimeConfig.trusted_keys``.
        graceful_timeout_s: On SIGTERM, how long in-flight requests may take to finish.
        default_batching: Batching for models the config file does not name.
        batching: Batching per model name.
        http_restricted: API groups that HTTP requests reach only with a given header.
        grpc_restricted: API groups that gRPC calls reach only with given metadata.
        header_timeout_s: Seconds a connection has to send a request's headers; then it is closed.
        body_timeout_s: Seconds a request has to send its body once its headers are in; then it is closed. A
            gRPC connection with no call in flight for this long is closed too.
        max_connections: Open connections at once, HTTP and gRPC each; more are refused.
        worker_processes: Processes that serve the artifacts behind the same ports, each with its own data plane
            and threads, sharing the artifacts' and executables' pages; 1: this process alone.
        worker_index: Which of those processes this one is (0 for the first); None when it is not one of
            several. The metrics carry it as their ``worker`` label.
    """

    host: str = "127.0.0.1"
    port: int = 8000
    grpc_port: int | None = 8001
    max_body_bytes: int = 64 * 1024 * 1024
    max_pending: int = 256
    workers: int = field(default_factory=lambda: os.cpu_count() or 2)
    intra_op_num_threads: int | None = None
    trusted_keys: tuple[str | os.PathLike | bytes, ...] = ()
    graceful_timeout_s: float = 30.0
    default_batching: BatchingConfig = BatchingConfig()
    batching: dict[str, BatchingConfig] = field(default_factory=dict)
    http_restricted: tuple[Restriction, ...] = ()
    grpc_restricted: tuple[Restriction, ...] = ()
    header_timeout_s: float = 10.0
    body_timeout_s: float = 60.0
    max_connections: int = 4096
    worker_processes: int = 1
    worker_index: int | None = None

    def batching_for(self, model: str) -> BatchingConfig:
        return self.batching.get(model, self.default_batching)


def load_model_config(path: str | os.PathLike) -> dict[str, BatchingConfig]:
    """Per-model batching from a YAML (or JSON) file::

        models:
          cls: {max_batch_size: 16, max_queue_delay_us: 500}
    """
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ServerConfigError(f"{path}: no such model config file") from None
    except (OSError, yaml.YAMLError) as e:
        raise ServerConfigError(f"{path}: cannot read the model config: {e}") from e
    models = (data or {}).get("models") if isinstance(data, dict) else None
    if not isinstance(models, dict):
        raise ServerConfigError(f"{path}: expected a 'models' mapping of model name to settings")
    out = {}
    for name, entry in models.items():
        entry = entry or {}
        unknown = set(entry) - {"max_batch_size", "max_queue_delay_us"}
        if unknown or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in entry.values()):
            raise ServerConfigError(
                f"{path}: model {name!r}: expected non-negative integers for max_batch_size and "
                f"max_queue_delay_us, received {entry!r}"
            )
        out[str(name)] = BatchingConfig(**entry)
    return out
