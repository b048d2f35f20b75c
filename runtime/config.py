"""RuntimeConfig: how a Runner loads and checks an artifact, with PopRT's fields."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class RuntimeConfig:
    """Runner settings. Field names and defaults are PopRT's.

    Attributes:
        validate_io_params: Check every tensor passed to ``execute`` against its
            anchor (dtype and shape) and require ``index`` to agree with the
            tensors. False skips those checks on the hot path and lets the
            caller pass one subgraph's tensors without ``index``; the runner
            infers it from the names either way, and a mismatch the backend
            finds still comes back as ExecutionError.
        timeout_ns: PopRT's batching timeout (10 ms). Accepted and stored; it
            does not act yet, because the runner does not batch.
        batching_dim: PopRT's batching dimension, -1 for disabled. Accepted and
            stored; it does not act yet.
        thread_safe: PopRT's switch for a locked ``execute``. The runner is
            always safe to call from many threads (each call has its own feeds
            and fetches), so False changes nothing.
        check_package_hash: Refuse an artifact compiled by another backend
            version. False loads it anyway, at the caller's risk.
        ring_buffer_size_multiplier: PopRT's I/O ring size. Accepted and
            stored; it does not act (there are no device rings here).
        intra_op_num_threads: popfuse's own: the backend's intra-op thread
            count; None means the backend's default.
        trusted_keys: popfuse's own: Ed25519 public keys (paths of PEM or
            OpenSSH ``.pub`` files, or their bytes). When any is given, only an
            artifact signed by one of them loads (``popfuse build --sign-key``);
            the signature is checked before any record of the file is parsed.
        executable_cache: popfuse's own: the folder where the backend keeps each
            executable in the form it opens fastest and holds in least memory
            (onnxruntime's ORT format, mapped from the file), made on an
            artifact's first load and named by its contents; several processes
            share it. By default ``$POPFUSE_CACHE_DIR``, else
            ``$XDG_CACHE_HOME/popfuse/executables`` (``~/.cache`` when unset);
            None opens every artifact without a cache.
    """

    validate_io_params: bool = True
    timeout_ns: int = 10_000_000
    batching_dim: int = -1
    thread_safe: bool = True
    check_package_hash: bool = True
    ring_buffer_size_multiplier: int = 2
    intra_op_num_threads: int | None = None
    trusted_keys: Sequence[str | os.PathLike | bytes] = ()
    executable_cache: str | os.PathLike | None = field(default_factory=lambda: default_executable_cache())


def default_executable_cache() -> Path:
    """Where executables are cached unless RuntimeConfig says otherwise."""
    if os.environ.get("POPFUSE_CACHE_DIR"):
        return Path(os.environ["POPFUSE_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "popfuse" / "executables"
