"""An artifact is metadata + fusion map + executable (+ tensor data), as PopEF blobs.

``write_artifact`` lays the blobs out, and signs them when given a key;
``read_artifact`` checks the signature against the trusted keys before it
parses any record, checks that every blob the metadata promises is there (so a
file cut at a blob boundary is caught too), and checks the records against
each other (``validation``) before anything uses them. ``read_header`` reads
the metadata and fusion map from the front of the file alone, which say what
the artifact serves and how big it is before it loads.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, BinaryIO

from . import metadata as md
from .atomic import write_atomic
from .compression import compress, decompress
from .display import source_label
from .errors import ArtifactError
from .popef import Blob, BlobType, Signer, blob_extent, iter_encoded, read_blob_at, read_blobs_checking_later, reading
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


@dataclass(frozen=True)
class ArtifactHeader:
    """What the front of an artifact says: its metadata, its fusion map, and the file's size in bytes."""

    metadata: md.Metadata
    fusion_map: md.FusionMap
    size: int


def to_blobs(artifact: Artifact) -> list[Blob]:
    """The blobs of ``artifact`` in file order, with the metadata's blob list filled in.

    The metadata, the fusion map and the executable are stored compressed (``compression``): they are
    mostly names. Tensor blobs are stored as they are, so weights can be used in place.
    """
    rest = [Blob(BlobType.OPAQUE, FUSION_MAP_BLOB, compress(md.dumps(artifact.fusion_map), "the fusion map"))]
    rest += [Blob(BlobType.OPAQUE, k, v) for k, v in sorted(artifact.opaques.items())]
    executable = compress(artifact.executable, "the executable")
    rest.append(Blob(BlobType.EXECUTABLE, artifact.metadata.executable, executable))
    rest += [Blob(BlobType.TENSOR, k, v) for k, v in sorted(artifact.tensors.items())]
    refs = tuple(md.BlobRef(int(b.type), b.name, len(b.payload)) for b in rest)
    meta = replace(artifact.metadata, blobs=refs)
    return [Blob(BlobType.METADATA, "metadata", compress(md.dumps(meta), "the metadata")), *rest]


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
    # The weights' digests are checked on another thread while the records are decoded and checked; every
    # digest is checked before this returns, and the signature (over the headers, which hold the digests)
    # before any record is parsed.
    blobs, finish = read_blobs_checking_later(source, (BlobType.TENSOR,))
    try:
        signature = verify(blobs, trusted_keys, label) if trusted_keys else None
        artifact = parse_blobs(blobs, label)
    finally:
        finish()
    return replace(artifact, signature=signature)


def read_header(source: str | os.PathLike | BinaryIO, label: str | None = None) -> ArtifactHeader:
    """Read and verify the metadata and fusion map at the front of an artifact, and nothing after them.

    ``source`` is a path or a seekable binary stream (an object in storage); ``label`` names it in errors.
    The size is the file's; for a stream, the one the metadata's blob list adds up to.

    Raises:
        ArtifactError: the file is missing, is not a popfuse artifact, or its front is truncated or corrupt.
    """
    if not isinstance(source, (str, os.PathLike)):
        return _read_header(source, label or repr(source), None)
    label = label or source_label(source)
    with reading(source, label) as stream:
        return _read_header(stream, label, os.fstat(stream.fileno()).st_size)


def _read_header(stream: BinaryIO, label: str, actual_size: int | None) -> ArtifactHeader:
    first, offset = read_blob_at(stream, 0, 0, label, expect=BlobType.METADATA)
    meta: md.Metadata = load_record(md.Metadata, first.payload, label)
    # The writer puts the fusion map right after the metadata (``to_blobs``).
    second, _ = read_blob_at(stream, offset, 1, label, expect=BlobType.OPAQUE)
    if second.name != FUSION_MAP_BLOB:
        raise ArtifactError(f"{label}: blob 1 is {second.name!r}, expected the fusion map; this file was not "
                            "written by popfuse")
    fusion_map: md.FusionMap = load_record(md.FusionMap, second.payload, label)
    # The tensor blobs are not read: their sizes are those the blob list promises, which a full read checks.
    check_records(meta, fusion_map, {r.name: range(r.size) for r in meta.blobs if r.type == BlobType.TENSOR}, label)
    size = offset
    for ref in meta.blobs:
        size += blob_extent(ref.name, ref.size, size)
    if actual_size is not None and actual_size < size:
        raise ArtifactError(f"{label}: the file has {actual_size} bytes, but its metadata lists blobs of {size}; "
                            "it is truncated")
    # Blobs past those listed are a later writer's, which readers skip; they still take room.
    return ArtifactHeader(meta, fusion_map, size if actual_size is None else actual_size)


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
