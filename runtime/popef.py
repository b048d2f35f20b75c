"""The PopEF-structured container: a file is a sequence of self-describing blobs.

Pure Python (no onnx, no onnxruntime), so the compiler can write artifacts and
tools can read them anywhere. The byte layout is documented in
``docs/popef-format.md``; it follows PopEF's structure, not its bytes.

Each blob is a 32-byte little-endian header, then a UTF-8 name, then the payload.
Payloads are aligned, so tensor data can be used in place from a mapped file::

    0  4s magic          b"PFEF"
    4  H  format version (FORMAT_VERSION)
    6  H  blob type      (BlobType; unknown types are skipped by readers)
    8  I  header size    (32, plus zero padding that starts the payload on a
                          64-byte boundary of the file; readers skip the rest)
    12 I  name size
    16 Q  total size     (header + name + payload)
    24 I  CRC-32 of name + payload
    28 I  CRC-32 of header bytes 0..27
"""

from __future__ import annotations

import contextlib
import enum
import mmap
import os
import struct
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from .atomic import write_atomic
from .display import source_label
from .errors import ArtifactError

MAGIC = b"PFEF"
FORMAT_VERSION = 1
_HEADER = struct.Struct("<4sHHIIQI")
_HEADER_CRC = struct.Struct("<I")
HEADER_SIZE = _HEADER.size + _HEADER_CRC.size
PAYLOAD_ALIGN = 64


class BlobType(enum.IntEnum):
    """Blob types, with PopEF's meanings."""

    METADATA = 1
    EXECUTABLE = 2
    TENSOR = 3
    OPAQUE = 4


@dataclass(frozen=True)
class Blob:
    """One blob: its type (a BlobType, or an unknown int), name and payload."""

    type: int
    name: str
    payload: bytes | memoryview


def _header_size(name_size: int, offset: int) -> int:
    """The header's size with the padding that starts the payload of a blob written at ``offset`` on a
    ``PAYLOAD_ALIGN``-byte boundary."""
    return HEADER_SIZE + (-(offset + HEADER_SIZE + name_size) % PAYLOAD_ALIGN)


def blob_extent(name: str, payload_size: int, offset: int) -> int:
    """The bytes a blob named ``name`` with a payload of ``payload_size`` bytes takes in a file at ``offset``."""
    name_size = len(name.encode("utf-8"))
    return _header_size(name_size, offset) + name_size + payload_size


def encode_header(blob: Blob, offset: int = 0) -> bytes:
    """The header and name of ``blob``, padded so that its payload, written at
    ``offset`` in the file, starts on a ``PAYLOAD_ALIGN``-byte boundary."""
    name = blob.name.encode("utf-8")
    header_size = _header_size(len(name), offset)
    total = header_size + len(name) + len(blob.payload)
    crc = zlib.crc32(blob.payload, zlib.crc32(name))
    head = _HEADER.pack(MAGIC, FORMAT_VERSION, int(blob.type), header_size, len(name), total, crc)
    padding = b"\0" * (header_size - HEADER_SIZE)
    return head + _HEADER_CRC.pack(zlib.crc32(head)) + padding + name


def iter_encoded(blobs: Iterable[Blob]) -> Iterator[bytes]:
    """The file's bytes, chunk by chunk, without joining large payloads."""
    offset = 0
    for blob in blobs:
        header = encode_header(blob, offset)
        yield header
        yield blob.payload
        offset += len(header) + len(blob.payload)


def write_blobs(path: str | os.PathLike, blobs: Iterable[Blob]) -> int:
    """Write ``blobs`` to ``path`` atomically; returns the file size."""
    return write_atomic(path, iter_encoded(blobs))


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
        blobs.append(_read_one(label, data, offset, len(blobs)))
        offset += _total_size(data, offset)
    return blobs


def read_blob_at(stream: BinaryIO, offset: int, number: int, label: str,
                 expect: BlobType | None = None) -> tuple[Blob, int]:
    """Read and verify blob ``number``, which starts at ``offset`` of a seekable binary ``stream``, reading
    nothing past its end: the front of a file is read without the rest. Returns the blob and its total size.

    Raises:
        ArtifactError: as ``read_blobs``; also when the blob is not of type ``expect`` (checked before its
            payload is read).
    """
    where = f"{label}: blob {number} at byte {offset}"
    try:
        stream.seek(offset)
        head = stream.read(HEADER_SIZE)
        if len(head) < HEADER_SIZE:
            raise ArtifactError(f"{where}: truncated; {len(head)} bytes left, a header needs {HEADER_SIZE}")
        btype, header_size, name_size, total, crc = _check_header(where, head, offset)
        if expect is not None and btype != expect:
            raise ArtifactError(f"{where}: a blob of type {btype}, expected {expect.name.lower()} here")
        rest = stream.read(total - HEADER_SIZE)
    except OSError as e:
        raise ArtifactError(f"{where}: cannot read: {e.strerror or e}") from e
    if len(rest) < total - HEADER_SIZE:
        raise ArtifactError(f"{where}: truncated; the blob declares {total} bytes but {HEADER_SIZE + len(rest)} remain")
    blob = _check_body(where, memoryview(head + rest), btype, header_size, name_size, crc)
    return blob, total


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
    with reading(path, str(path)) as f:
        if os.fstat(f.fileno()).st_size == 0:
            return str(path), memoryview(b"")
        # The map stays valid after the file is closed; payload views keep it alive.
        return str(path), memoryview(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ))


@contextlib.contextmanager
def reading(path: str | os.PathLike, label: str) -> Iterator[BinaryIO]:
    """An artifact file open for reading; failing to open or read it raises ArtifactError naming ``label``."""
    try:
        with open(path, "rb") as f:
            yield f
    except FileNotFoundError:
        raise ArtifactError(f"{label}: no such artifact file") from None
    except IsADirectoryError:
        raise ArtifactError(f"{label}: is a folder; expected an artifact file such as executable.popef") from None
    except OSError as e:
        raise ArtifactError(f"{label}: cannot read the artifact: {e.strerror or e}") from e


def _total_size(data: memoryview, offset: int) -> int:
    return _HEADER.unpack_from(data, offset)[5]


def _read_one(label: str, data: memoryview, offset: int, number: int) -> Blob:
    where = f"{label}: blob {number} at byte {offset}"
    remaining = len(data) - offset
    if remaining < HEADER_SIZE:
        raise ArtifactError(f"{where}: truncated; {remaining} bytes left, a header needs {HEADER_SIZE}")
    btype, header_size, name_size, total, crc = _check_header(where, data[offset : offset + HEADER_SIZE], offset)
    if total > remaining:
        raise ArtifactError(f"{where}: truncated; the blob declares {total} bytes but {remaining} remain")
    return _check_body(where, data[offset : offset + total], btype, header_size, name_size, crc)


def _check_header(where: str, head: bytes | memoryview, offset: int) -> tuple[int, int, int, int, int]:
    """The type, header size, name size, total size and CRC of a blob's verified fixed header."""
    magic, version, btype, header_size, name_size, total, crc = _HEADER.unpack_from(head)
    if magic != MAGIC:
        hint = " (this is not a popfuse artifact)" if offset == 0 else ""
        raise ArtifactError(f"{where}: bad magic {bytes(magic)!r}, expected {MAGIC!r}{hint}")
    (header_crc,) = _HEADER_CRC.unpack_from(head, _HEADER.size)
    if zlib.crc32(head[: _HEADER.size]) != header_crc:
        raise ArtifactError(f"{where}: the header is corrupt (checksum mismatch)")
    if version > FORMAT_VERSION:
        raise ArtifactError(
            f"{where}: format version {version} is newer than this popfuse reads ({FORMAT_VERSION}); "
            "upgrade popfuse"
        )
    if header_size < HEADER_SIZE or total < header_size + name_size:
        raise ArtifactError(f"{where}: inconsistent sizes (header {header_size}, name {name_size}, total {total})")
    return btype, header_size, name_size, total, crc


def _check_body(where: str, blob: memoryview, btype: int, header_size: int, name_size: int, crc: int) -> Blob:
    """The blob whose ``total`` bytes (header included) are ``blob``, after checking its padding and CRC."""
    if any(blob[HEADER_SIZE:header_size]):
        raise ArtifactError(f"{where}: the header padding is corrupt (not zeros)")
    body = blob[header_size:]
    if zlib.crc32(body) != crc:
        raise ArtifactError(f"{where}: the contents are corrupt (checksum mismatch)")
    try:
        name = bytes(body[:name_size]).decode("utf-8")
    except UnicodeDecodeError as e:
        raise ArtifactError(f"{where}: the blob name is not UTF-8") from e
    return Blob(type=btype, name=name, payload=body[name_size:])
