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

import contextlib
import enum
import hashlib
import mmap
import os
import struct
import threading
import zlib
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

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
    blobs, finish = read_blobs_checking_later(source, ())
    finish()
    return blobs


def read_blobs_checking_later(source: str | os.PathLike | bytes | memoryview,
                              later: Collection[int]) -> tuple[list[Blob], Callable[[], None]]:
    """As ``read_blobs``, but the SHA-256 of the blobs whose type is in ``later`` is checked on another thread
    (hashlib lets go of the GIL) while the caller goes on with the rest: the weights' digests while the records
    are decoded. ``finish()`` waits for that check and raises as ``read_blobs`` would; nothing may use those
    blobs' payloads before it returns.

    Raises:
        ArtifactError: as ``read_blobs``, for all but the payloads checked later.
    """
    label, data = _open(source)
    blobs: list[Blob] = []
    pending: list[tuple[str, memoryview, bytes]] = []
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
        blobs.append(_read_one(label, data, offset, len(blobs), pending if later else None, later))
        offset += _total_size(data, offset)
    return blobs, _check_on_a_thread(pending)


def _check_on_a_thread(pending: list[tuple[str, memoryview, bytes]]) -> Callable[[], None]:
    """Start checking ``pending`` (where, body, digest) on a thread; the returned function waits for it."""
    if not pending:
        return lambda: None
    mismatch: list[str] = []

    def check() -> None:
        for where, body, digest in pending:
            if hashlib.sha256(body).digest() != digest:
                mismatch.append(where)
                return

    thread = threading.Thread(target=check, name="popfuse-digests", daemon=True)
    thread.start()

    def finish() -> None:
        thread.join()
        if mismatch:
            raise ArtifactError(_changed(mismatch[0]))

    return finish


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
        btype, header_size, name_size, total, digest = _check_header(where, head, offset)
        if expect is not None and btype != expect:
            raise ArtifactError(f"{where}: a blob of type {btype}, expected {expect.name.lower()} here")
        rest = stream.read(total - HEADER_SIZE)
    except OSError as e:
        raise ArtifactError(f"{where}: cannot read: {e.strerror or e}") from e
    if len(rest) < total - HEADER_SIZE:
        raise ArtifactError(f"{where}: truncated; the blob declares {total} bytes but {HEADER_SIZE + len(rest)} remain")
    blob = _check_body(where, memoryview(head + rest), btype, header_size, name_size, digest)
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


def _read_one(label: str, data: memoryview, offset: int, number: int,
              pending: list[tuple[str, memoryview, bytes]] | None = None, later: Collection[int] = ()) -> Blob:
    """Blob ``number`` at ``offset``; with ``pending``, a blob whose type is in ``later`` has its body's digest
    appended there to check, rather than checked now."""
    where = f"{label}: blob {number} at byte {offset}"
    remaining = len(data) - offset
    btype, header_size, name_size, total, digest = _check_header(where, data[offset : offset + HEADER_SIZE], offset)
    if total > remaining:
        raise ArtifactError(f"{where}: truncated; the blob declares {total} bytes but {remaining} remain")
    blob = data[offset : offset + total]
    if pending is None or btype not in later:
        return _check_body(where, blob, btype, header_size, name_size, digest)
    try:
        checked = _check_body(where, blob, btype, header_size, name_size, b"")
    except ArtifactError:
        # Damage the digest would have named first is named so still: the name is part of what it covers.
        _check_body(where, blob, btype, header_size, name_size, digest)
        raise
    pending.append((where, blob[header_size:], digest))
    return checked


def _changed(where: str) -> str:
    return f"{where}: the contents are corrupt or were changed (SHA-256 mismatch)"


def _check_header(where: str, head: bytes | memoryview, offset: int) -> tuple[int, int, int, int, bytes]:
    """The type, header size, name size, total size and SHA-256 of a blob's verified fixed header.

    ``head`` is the first ``HEADER_SIZE`` bytes of the blob, or what is left of the file when that is less.
    """
    if bytes(head[: len(MAGIC)]) != MAGIC[: len(head)]:
        hint = " (this is not a popfuse artifact)" if offset == 0 else ""
        raise ArtifactError(f"{where}: bad magic {bytes(head[: len(MAGIC)])!r}, expected {MAGIC!r}{hint}")
    # The version first: an older format's header has another size, so its checksum cannot be checked here.
    if len(head) >= _VERSION.size + len(MAGIC):
        (version,) = _VERSION.unpack_from(head, len(MAGIC))
        if version != FORMAT_VERSION:
            newer = version > FORMAT_VERSION
            fix = "upgrade popfuse" if newer else "rebuild it with `popfuse build CONFIG.yaml`"
            raise ArtifactError(
                f"{where}: format version {version} is {'newer' if newer else 'older'} than this popfuse reads "
                f"({FORMAT_VERSION}); {fix}"
            )
    if len(head) < HEADER_SIZE:
        raise ArtifactError(f"{where}: truncated; {len(head)} bytes left, a header needs {HEADER_SIZE}")
    _, _, btype, header_size, name_size, total, digest = _HEADER.unpack_from(head)
    (header_crc,) = _HEADER_CRC.unpack_from(head, _HEADER.size)
    if zlib.crc32(head[: _HEADER.size]) != header_crc:
        raise ArtifactError(f"{where}: the header is corrupt (checksum mismatch)")
    if header_size < HEADER_SIZE or total < header_size + name_size:
        raise ArtifactError(f"{where}: inconsistent sizes (header {header_size}, name {name_size}, total {total})")
    return btype, header_size, name_size, total, digest


def _check_body(where: str, blob: memoryview, btype: int, header_size: int, name_size: int, digest: bytes) -> Blob:
    """The blob whose ``total`` bytes (header included) are ``blob``, after checking its padding and SHA-256
    (unless ``digest`` is empty: the caller checks it later)."""
    if any(blob[HEADER_SIZE:header_size]):
        raise ArtifactError(f"{where}: the header padding is corrupt (not zeros)")
    body = blob[header_size:]
    if digest and hashlib.sha256(body).digest() != digest:
        raise ArtifactError(_changed(where))
    try:
        name = bytes(body[:name_size]).decode("utf-8")
    except UnicodeDecodeError as e:
        raise ArtifactError(f"{where}: the blob name is not UTF-8") from e
    return Blob(type=btype, name=name, payload=body[name_size:], header=bytes(blob[: header_size + name_size]))
