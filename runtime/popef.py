"""The PopEF-structured container: a file is a sequence of self-describing blobs.

Pure Python (no onnx, no onnxruntime), so the compiler can write artifacts and
tools can read them anywhere. The byte layout is documented in
``docs/popef-format.md``; it follows PopEF's structure, not its bytes.

Each blob is a 60-byte little-endian header, then a UTF-8 name, then the payload.
Payloads are aligned, so tensor data can be used in place from a mapped file::

    0  4s  magic          b"PFEF"
    4  H   format version (FORMAT_VERSION)
    6  H   blob type      (BlobType; unknown types are skipped by readers)
    8  I   header size    (60, plus zero padding that starts the payload on a
                           64-byte boundary of the file; readers skip the rest)
    12 I   name size
    16 Q   total size     (header + name + payload)
    24 32s SHA-256 of name + payload
    56 I   CRC-32 of header bytes 0..55

A file may end with one signature blob (``BlobType.SIGNATURE``) over the exact
bytes of every header (with its padding and name) before it (``signed_statement``):
each header holds its blob's SHA-256, so the signature covers every byte of the file.
"""

from __future__ import annotations

import enum
import hashlib
import mmap
import os
import struct
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .atomic import write_atomic
from .display import source_label
from .errors import ArtifactError

MAGIC = b"PFEF"
FORMAT_VERSION = 3
_HEADER = struct.Struct("<4sHHIIQ32s")
_HEADER_CRC = struct.Struct("<I")
_VERSION = struct.Struct("<H")
HEADER_SIZE = _HEADER.size + _HEADER_CRC.size
PAYLOAD_ALIGN = 64


class BlobType(enum.IntEnum):
    """Blob types, with PopEF's meanings."""

    METADATA = 1
    EXECUTABLE = 2
    TENSOR = 3
    OPAQUE = 4
    #: popfuse's own: a signature over every blob before it; the last blob of a signed file.
    SIGNATURE = 5


#: What a signature signs begins with these bytes, so that it can never be taken for a signature of anything else.
SIGNING_DOMAIN = b"popfuse-artifact-signature-v1\n"


@dataclass(frozen=True)
class Blob:
    """One blob: its type (a BlobType, or an unknown int), name and payload."""

    type: int
    name: str
    payload: bytes | memoryview
    #: The bytes before the payload as read from a file: header, padding and name (empty for a blob not read
    #: from one); what a signature signs of the blob, as ``encode_header`` writes it.
    header: bytes = field(default=b"", repr=False, compare=False)


#: Signs a statement: its bytes in, the signature blob out.
Signer = Callable[[bytes], Blob]


def encode_header(blob: Blob, offset: int = 0) -> bytes:
    """The header and name of ``blob``, padded so that its payload, written at
    ``offset`` in the file, starts on a ``PAYLOAD_ALIGN``-byte boundary."""
    name = blob.name.encode("utf-8")
    header_size = HEADER_SIZE + (-(offset + HEADER_SIZE + len(name)) % PAYLOAD_ALIGN)
    total = header_size + len(name) + len(blob.payload)
    digest = hashlib.sha256(name)
    digest.update(blob.payload)
    head = _HEADER.pack(MAGIC, FORMAT_VERSION, int(blob.type), header_size, len(name), total, digest.digest())
    padding = b"\0" * (header_size - HEADER_SIZE)
    return head + _HEADER_CRC.pack(zlib.crc32(head)) + padding + name


def iter_encoded(blobs: Iterable[Blob], sign: Signer | None = None) -> Iterator[bytes]:
    """The file's bytes, chunk by chunk, without joining large payloads.

    ``sign`` (the statement's bytes -> a signature blob) appends that blob, signing every header before it.
    """
    offset = 0
    headers = []
    for blob in blobs:
        header = encode_header(blob, offset)
        headers.append(header)
        yield header
        yield blob.payload
        offset += len(header) + len(blob.payload)
    if sign is not None:
        signature = sign(SIGNING_DOMAIN + b"".join(headers))
        yield encode_header(signature, offset)
        yield signature.payload


def write_blobs(path: str | os.PathLike, blobs: Iterable[Blob], sign: Signer | None = None) -> int:
    """Write ``blobs`` (signed by ``sign``, if given) to ``path`` atomically; returns the file size."""
    return write_atomic(path, iter_encoded(blobs, sign))


def signed_statement(blobs: list[Blob]) -> tuple[bytes, Blob] | None:
    """What the signature of a file read by ``read_blobs`` signs, and its signature blob; None if unsigned."""
    if not blobs or blobs[-1].type != BlobType.SIGNATURE:
        return None
    return SIGNING_DOMAIN + b"".join(b.header for b in blobs[:-1]), blobs[-1]


def read_blobs(source: str | os.PathLike | bytes | memoryview) -> list[Blob]:
    """Parse and verify every blob of a file (memory-mapped) or of bytes.

    Raises:
        ArtifactError: the file is missing, is not a PopEF-structured file, or is
            truncated or corrupt. The message names the blob and the offset.
    """
    label, data = _open(source)
    blobs: list[Blob] = []
    offset = 0
    size = len(data)
    if size == 0:
        raise ArtifactError(f"{label}: the file is empty; expected a popfuse artifact")
    while offset < size:
        if blobs and blobs[-1].type == BlobType.SIGNATURE:
            raise ArtifactError(
                f"{label}: blob {len(blobs)} at byte {offset} follows the signature; a signature is the last blob, "
                "so this file was changed after it was signed"
            )
        blobs.append(_read_one(label, data, offset, len(blobs)))
        offset += _total_size(data, offset)
    return blobs


def release_pages(*payloads: bytes | memoryview) -> None:
    """Drop from this process the resident pages of the file mappings behind ``payloads``, if any.

    The mapping stays valid: a page read again comes back from the page cache on
    first touch. Reading an artifact checks every blob's checksum, which brings
    the whole file in; once the backend has opened the executable, only the
    weights its kernels read in place are needed again, not those it copied or
    prepacked into memory of its own.
    """
    if not hasattr(mmap, "MADV_DONTNEED"):
        return
    owners = {id(p.obj): p.obj for p in payloads if isinstance(p, memoryview) and isinstance(p.obj, mmap.mmap)}
    for owner in owners.values():
        owner.madvise(mmap.MADV_DONTNEED)


def _open(source: str | os.PathLike | bytes | memoryview) -> tuple[str, memoryview]:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return source_label(source), memoryview(source)
    path = Path(source)
    try:
        with open(path, "rb") as f:
            if os.fstat(f.fileno()).st_size == 0:
                return str(path), memoryview(b"")
            # The map stays valid after the file is closed; payload views keep it alive.
            return str(path), memoryview(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ))
    except FileNotFoundError:
        raise ArtifactError(f"{path}: no such artifact file") from None
    except IsADirectoryError:
        raise ArtifactError(f"{path}: is a folder; expected an artifact file such as executable.popef") from None
    except OSError as e:
        raise ArtifactError(f"{path}: cannot read the artifact: {e.strerror or e}") from e


def _total_size(data: memoryview, offset: int) -> int:
    return _HEADER.unpack_from(data, offset)[5]


def _read_one(label: str, data: memoryview, offset: int, number: int) -> Blob:
    where = f"{label}: blob {number} at byte {offset}"
    remaining = len(data) - offset
    if bytes(data[offset : offset + len(MAGIC)]) != MAGIC[:remaining]:
        hint = " (this is not a popfuse artifact)" if offset == 0 else ""
        raise ArtifactError(f"{where}: bad magic {bytes(data[offset : offset + 4])!r}, expected {MAGIC!r}{hint}")
    # The version first: an older format's header has another size, so its checksum cannot be checked here.
    if remaining >= _VERSION.size + 4:
        (version,) = _VERSION.unpack_from(data, offset + 4)
        if version != FORMAT_VERSION:
            newer = version > FORMAT_VERSION
            fix = "upgrade popfuse" if newer else "rebuild it with `popfuse build CONFIG.yaml`"
            raise ArtifactError(
                f"{where}: format version {version} is {'newer' if newer else 'older'} than this popfuse reads "
                f"({FORMAT_VERSION}); {fix}"
            )
    if remaining < HEADER_SIZE:
        raise ArtifactError(f"{where}: truncated; {remaining} bytes left, a header needs {HEADER_SIZE}")
    _, version, btype, header_size, name_size, total, digest = _HEADER.unpack_from(data, offset)
    (header_crc,) = _HEADER_CRC.unpack_from(data, offset + _HEADER.size)
    if zlib.crc32(data[offset : offset + _HEADER.size]) != header_crc:
        raise ArtifactError(f"{where}: the header is corrupt (checksum mismatch)")
    if header_size < HEADER_SIZE or total < header_size + name_size:
        raise ArtifactError(f"{where}: inconsistent sizes (header {header_size}, name {name_size}, total {total})")
    if total > remaining:
        raise ArtifactError(f"{where}: truncated; the blob declares {total} bytes but {remaining} remain")
    if any(data[offset + HEADER_SIZE : offset + header_size]):
        raise ArtifactError(f"{where}: the header padding is corrupt (not zeros)")
    body = data[offset + header_size : offset + total]
    if hashlib.sha256(body).digest() != digest:
        raise ArtifactError(f"{where}: the contents are corrupt or were changed (SHA-256 mismatch)")
    try:
        name = bytes(body[:name_size]).decode("utf-8")
    except UnicodeDecodeError as e:
        raise ArtifactError(f"{where}: the blob name is not UTF-8") from e
    header = bytes(data[offset : offset + header_size + name_size])
    return Blob(type=btype, name=name, payload=body[name_size:], header=header)
