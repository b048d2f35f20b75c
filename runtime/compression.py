"""How an artifact stores its records and its executable: LZMA2-compressed, behind their decoded size.

A frame is the decoded size (8 bytes, little-endian), then a raw LZMA2 stream (no container) whose
dictionary is as large as the decoded bytes, at least 4 KiB and at most 1 MiB. The metadata, the fusion map
and the executable are stored so: they are mostly names, which LZMA2 shrinks about twice as far as zlib did
(figures in docs/popef-format.md). Tensor data is never compressed: it is used in place.

The reader checks the declared size against its limit, and against 1,024 times the frame's own size, before
it decodes anything; it decodes no more than that size, and refuses a stream that is corrupt, ends early or
runs on. A forged frame can neither make it allocate more than the lesser of the two nor raise anything but
ArtifactError. The dictionary is the reader's choice, not the stream's, so a forged stream cannot ask for a
larger one.
"""

from __future__ import annotations

import lzma
import struct

from .errors import ArtifactError

_SIZE = struct.Struct("<Q")
_MIN_DICT = 4 << 10
_MAX_DICT = 1 << 20
#: How many times its compressed size a frame may declare. LZMA2 shrinks real graphs and records 2-12x; a run
#: of zeros it shrinks about 7,000x, which would let a small forged file make a reader allocate gigabytes.
_MAX_RATIO = 1024
_SLACK = 64 << 10
#: LZMA's level 6; lc=1, pb=0 suit protobuf and JSON, whose bytes follow no 4-byte rhythm, better than its
#: defaults (lc=3, pb=2).
_ENCODER = {"id": lzma.FILTER_LZMA2, "preset": 6, "lc": 1, "lp": 0, "pb": 0}


def compress(data: bytes | memoryview) -> bytes:
    """``data`` as a frame: its size, then its LZMA2 stream. The same bytes always give the same frame."""
    filters = [{**_ENCODER, "dict_size": _dictionary(len(data))}]
    return _SIZE.pack(len(data)) + lzma.compress(data, format=lzma.FORMAT_RAW, filters=filters)


def decompress(frame: bytes | memoryview, limit: int, what: str) -> bytes:
    """The bytes ``frame`` holds, at most ``limit`` of them; ``what`` names the blob in errors
    (``"x.popef: the metadata"``).

    Raises:
        ArtifactError: the frame declares more than ``limit`` bytes, or its stream is corrupt, ends
            before the declared size or goes on after it.
    """
    if len(frame) < _SIZE.size:
        raise ArtifactError(f"{what} is truncated: {len(frame)} bytes, a compressed blob starts with {_SIZE.size}")
    (size,) = _SIZE.unpack_from(frame)
    if size > limit:
        raise ArtifactError(f"{what} declares {size} bytes once decompressed, over the {limit} a reader accepts; "
                            "the file is corrupt")
    if size > _MAX_RATIO * len(frame) + _SLACK:
        raise ArtifactError(f"{what} declares {size} bytes once decompressed from {len(frame)}, more than "
                            f"{_MAX_RATIO} times its size, which no real graph or record reaches; the file is corrupt")
    decoder = lzma.LZMADecompressor(lzma.FORMAT_RAW, filters=[{"id": lzma.FILTER_LZMA2,
                                                               "dict_size": _dictionary(size)}])
    try:
        data = decoder.decompress(frame[_SIZE.size :], size + 1)
    except lzma.LZMAError as e:
        raise ArtifactError(f"{what} is corrupt: its compressed stream does not decode ({e})") from e
    if len(data) != size or not decoder.eof or decoder.unused_data:
        raise ArtifactError(f"{what} does not decompress to the {size} bytes it declares; the file is corrupt")
    return data


def _dictionary(size: int) -> int:
    """As large as the data, up to 1 MiB: a larger window found no more in fused graphs (one model's graph
    repeats within it), and its match search grew faster than the data, making builds super-linear in N."""
    return min(max(size, _MIN_DICT), _MAX_DICT)
