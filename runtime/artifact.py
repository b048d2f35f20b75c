"""An artifact is metadata + fusion map + executable (+ tensor data), as PopEF blobs.

``write_artifact`` lays the blobs out, and signs them when given a key;
``read_artifact`` checks the signature against the trusted keys before it
parses any record, checks that every blob the metadata promises is there (so a
file cut at a blob boundary is caught too), and checks the records against
each other (``validation``) before anything uses them.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from . import metadata as md
from .atomic import write_atomic
from .compression import compress, decompress
from .display import source_label
from .errors import ArtifactError
from .popef import Blob, BlobType, Signer, iter_encoded, read_blobs
from .signing import Signature, signature_of, verify
from .validation import check_records

FUSION_MAP_BLOB = "fusion_map"
#: The largest executable: one protobuf, which cannot exceed 2 GiB.
MAX_EXECUTABLE_BYTES = (1 << 31) - 1
#: The largest record (the metadata, the fusion map) once decompressed: far more than thousands of models
#: need, and a bound on the JSON a forged file can make a reader parse.
MAX_RECORD_BYTES = 64 << 20


@dataclass(frozen=True)
class Artifact:
    """The parts of an artifact, as read from or written to a file."""

    metadata: md.Metadata
    fusion_map: md.FusionMap
    executable: bytes | memoryview
    tensors: dict[str, bytes | memoryview] = field(default_factory=dict)
    opaques: dict[str, bytes | memoryview] = field(default_factory=dict)
    #: Who signed the file, when it was read from a signed one.
    signature: Signature | None = None
    #: Names what the executable computes: a SHA-256 over the executable's and the tensor blobs' contents (for
    #: an artifact read from a file, over their headers, which hold the contents' SHA-256s). Empty when built
    #: in memory.
    content_id: str = ""


def to_blobs(artifact: Artifact) -> list[Blob]:
    """The blobs of ``artifact`` in file order, with the metadata's blob list filled in.

    The metadata, the fusion map and the executable are stored compressed (``compression``): they are
    mostly names. Tensor blobs are stored as they are, so weights can be used in place.
    """
    rest = [Blob(BlobType.OPAQUE, FUSION_MAP_BLOB, compress(md.dumps(artifact.fusion_map)))]
    rest += [Blob(BlobType.OPAQUE, k, v) for k, v in sorted(artifact.opaques.items())]
    rest.append(Blob(BlobType.EXECUTABLE, artifact.metadata.executable, compress(artifact.executable)))
    rest += [Blob(BlobType.TENSOR, k, v) for k, v in sorted(artifact.tensors.items())]
    refs = tuple(md.BlobRef(int(b.type), b.name, len(b.payload)) for b in rest)
    meta = replace(artifact.metadata, blobs=refs)
    return [Blob(BlobType.METADATA, "metadata", compress(md.dumps(meta))), *rest]


def encode_artifact(artifact: Artifact, sign: Signer | None = None) -> Iterator[bytes]:
    """The file's bytes, chunk by chunk, signed by ``sign`` (``signing.signer(KEY)``) if given."""
    return iter_encoded(to_blobs(artifact), sign)


def write_artifact(path: str | os.PathLike, artifact: Artifact, sign: Signer | None = None) -> int:
    """Write ``artifact`` to ``path`` atomically, signed by ``sign`` if given; returns the file size in bytes."""
    return write_atomic(path, encode_artifact(artifact, sign))


def read_artifact(source: str | os.PathLike | bytes | memoryview, trusted_keys: Sequence[bytes] = ()) -> Artifact:
    """Read and verify an artifact from a path or from bytes.

    Args:
        source: The file's path, or its bytes.
        trusted_keys: Raw Ed25519 public keys (``signing.public_key``); when given, the file must be signed
            by one of them, which is checked before any record is parsed.

    Raises:
        ArtifactError: the file is missing, truncated, corrupt, lacks a blob
            that its metadata lists, or its records disagree.
        SignatureError: with ``trusted_keys``, the file is unsigned, signed by another key, or changed since.
    """
    label = source_label(source)
    blobs = read_blobs(source)
    signature = verify(blobs, trusted_keys, label) if trusted_keys else None
    return replace(parse_blobs(blobs, label), signature=signature)


def parse_blobs(blobs: list[Blob], label: str) -> Artifact:
    """Assemble an artifact from verified blobs and check its records; ``label`` names the file in errors.

    ``signature`` is the signer as the file claims it (checked against the key in the file only).
    """
    if blobs[0].type != BlobType.METADATA:
        raise ArtifactError(f"{label}: the first blob is type {blobs[0].type}, expected metadata")
    meta: md.Metadata = load_record(md.Metadata, blobs[0].payload, label)
    by_key = {(b.type, b.name): b for b in blobs[1:]}
    for ref in meta.blobs:
        blob = by_key.get((ref.type, ref.name))
        if blob is None:
            raise ArtifactError(f"{label}: blob {ref.name!r} (type {ref.type}) is missing; the file is truncated")
        if len(blob.payload) != ref.size:
            raise ArtifactError(
                f"{label}: blob {ref.name!r} has {len(blob.payload)} bytes, the metadata says {ref.size}"
            )
    opaques = {b.name: b.payload for b in blobs if b.type == BlobType.OPAQUE}
    if FUSION_MAP_BLOB not in opaques:
        raise ArtifactError(f"{label}: no fusion map; this file was not written by popfuse")
    executable = by_key.get((BlobType.EXECUTABLE, meta.executable))
    if executable is None:
        raise ArtifactError(f"{label}: the executable blob {meta.executable!r} is missing")
    fusion_map = load_record(md.FusionMap, opaques.pop(FUSION_MAP_BLOB), label)
    tensors = {b.name: b.payload for b in blobs if b.type == BlobType.TENSOR}
    check_records(meta, fusion_map, tensors, label)
    return Artifact(
        metadata=meta,
        fusion_map=fusion_map,
        executable=decompress(executable.payload, MAX_EXECUTABLE_BYTES, f"{label}: the executable"),
        tensors=tensors,
        opaques=opaques,
        signature=signature_of(blobs, label),
        content_id=content_id([executable, *(b for b in blobs if b.type == BlobType.TENSOR)]),
    )


def content_id(blobs: list[Blob]) -> str:
    """A SHA-256 naming these blobs' contents: from their headers' SHA-256s when read from a file (nothing is
    hashed again), else from their payloads."""
    digest = hashlib.sha256()
    for blob in blobs:
        digest.update(blob.name.encode() + b"\0")
        digest.update(blob.header if blob.header else hashlib.sha256(blob.payload).digest())
    return digest.hexdigest()


def load_record(kind: type[md.Metadata] | type[md.FusionMap], payload: bytes | memoryview, label: str) -> Any:
    """The metadata or the fusion map from its blob's payload, which holds it compressed (``compression``);
    ``label`` names the file in errors.

    Raises:
        ArtifactError: the payload does not decompress, or the record is malformed.
    """
    return md.loads(kind, decompress(payload, MAX_RECORD_BYTES, f"{label}: the {kind.__name__} record"), label)
