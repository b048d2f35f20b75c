"""Where an artifact lives: a path every node can read (a shared folder), or a URI (object storage, HTTP).

A path (or a ``file://`` URI) is used where it is. Any other URI is read through ``smart_open`` (which Ray
Serve installs; each scheme needs its own client, such as ``boto3`` for ``s3://``): its header with a ranged
read, and the whole file copied once into a node-local cache before it loads, because a runner maps its
artifact from a local file.
"""

from __future__ import annotations

import hashlib
import os
import re
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, TypeVar

from ..artifact import ArtifactHeader, read_header
from ..atomic import write_atomic
from ..errors import ArtifactError

_CHUNK = 1 << 20
T = TypeVar("T")


def local_path(source: str) -> Path | None:
    """The file ``source`` names on this machine, or None when it is a remote URI."""
    parsed = urllib.parse.urlparse(source)
    if parsed.scheme == "file":
        return Path(urllib.parse.unquote(parsed.path))
    if len(parsed.scheme) <= 1:  # no scheme, or a Windows drive letter
        return Path(source)
    return None


def source_header(source: str) -> ArtifactHeader:
    """The header of the artifact at ``source``, read without the rest of the file.

    Raises:
        ArtifactError: the artifact is missing, unreadable or not a popfuse artifact.
    """
    path = local_path(source)
    if path is not None:
        return read_header(path, source)
    return _read_remote(source, lambda stream: read_header(stream, source))


def local_copy(source: str, cache: Path, refresh: bool = False) -> Path:
    """A local file holding the artifact at ``source``: the file itself, or a copy in ``cache`` fetched once
    (again with ``refresh``).

    The copy is named by the URI's hash and written atomically, so replicas on one node share it and none
    ever sees half of it. The caller checks it against the header it expects.

    Raises:
        ArtifactError: the URI cannot be read.
    """
    path = local_path(source)
    if path is not None:
        return path
    name = Path(urllib.parse.urlparse(source).path).name or "artifact.popef"
    target = cache / f"{hashlib.sha256(source.encode()).hexdigest()[:16]}-{name}"
    if refresh or not target.exists():
        cache.mkdir(parents=True, exist_ok=True)
        _read_remote(source, lambda stream: write_atomic(target, iter(lambda: stream.read(_CHUNK), b"")))
    return target


def default_cache() -> Path:
    """Where remote artifacts are copied on this node: ``$XDG_CACHE_HOME/popfuse/artifacts``."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "popfuse" / "artifacts"


def _read_remote(source: str, read: Callable[[BinaryIO], T]) -> T:
    try:
        import smart_open
    except ModuleNotFoundError as e:
        raise ArtifactError(f"{source}: reading a URI needs smart_open, which the ray extra installs: "
                            "pip install 'popfuse[ray]'") from e
    try:
        with smart_open.open(source, "rb", compression="disable") as stream:
            return read(stream)
    except ArtifactError:
        raise
    except ImportError as e:  # smart_open's support for a scheme is an extra of its own
        found = re.search(r"use the (\w+) functionality", str(e))
        extra = found.group(1) if found else source.split("://", 1)[0]
        raise ArtifactError(f"{source}: smart_open reads such URIs only with its {extra!r} support installed: "
                            f"pip install 'smart_open[{extra}]'") from e
    except Exception as e:  # smart_open raises each scheme's own errors (HTTP, S3, GCS …)
        raise ArtifactError(f"{source}: cannot read the artifact: {type(e).__name__}: {e}") from e
