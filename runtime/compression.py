"""How an artifact stores its records and its executable: LZMA2-compressed, behind their decoded size.

A frame is the decoded size (8 bytes, little-endian), then a raw LZMA2 stream (no container) whose
dictionary is as large as the decoded bytes, at least 4 KiB and at most 1 MiB. The metadata, the fusion map
and the executable are stored so: they are mostly names, which LZMA2 shrinks about twice as far as zlib did
(figures in docs/popef-format.md). Tensor data is never compressed: it is used in place.

The reader checks the declared size against its limit, and (past 256 MiB) against 1,024 times the frame's own
size, before it decodes anything; it decodes no more than that size, and refuses a stream that is corrupt, ends
early or runs on. A forged frame can neither make it allocate more than the lesser of the two nor raise
anything but ArtifactError. The dictionary is the reader's choice, not the stream's, so a forged stream cannot ask for a
larger one.
"""

from __future__ import annotations

import lzma
import struct

from .errors import ArtifactError

_SIZE = struct.Struct("<Q")
_MIN_DICT = 4 << 10
_MAX_DICT = 1 << 20
#: Past 256 MiB, how many times its compressed size a frame may declare. LZMA2 shrinks graphs and records 2 to
#: 80x, and a run of zeros (a constant a graph returns stays in it) about 7,000x: without a bound, a small forged
#: file could make a reader allocate the executable's 2 GiB. Below 256 MiB any ratio is read; a writer refuses
#: to write what a reader would refuse.
_MAX_RATIO = 1024
_FREE = 256 << 20
#: LZMA's level 6; lc=1, pb=0 suit protobuf and JSON, whose bytes follow no 4-byte rhythm, better than its
#: defaults (lc=3, pb=2).
_ENCODER = {"id": lzma.FILTER_LZMA2, "preset": 6, "lc": 1, "lp": 0, "pb": 0}


def compress(data: bytes | memoryview, what: str = "a blob") -> bytes:
    """``data`` as a frame: its size, then its LZMA2 stream. The same bytes always give the same frame.

    Raises:
        ArtifactError: ``data`` is over 256 MiB and shrinks more than 1,024 times, which a reader refuses.
    """
    filters = [{**_ENCODER, "dict_size": _dictionary(len(data))}]
    frame = _SIZE.pack(len(data)) + lzma.compress(data, format=lzma.FORMAT_RAW, filters=filters)
    if len(data) > _largest(len(frame)):
        raise ArtifactError(f"{what} is {len(data)} bytes that compress to {len(frame)}, more than {_MAX_RATIO} times "
                            "over 256 MiB, which a reader refuses as a forged file; give the model's large constant "
                            "outputs as inputs instead")
    return frame


def _largest(frame_size: int) -> int:
    """The most bytes a frame of ``frame_size`` bytes may declare."""
    return max(_FREE, _MAX_RATIO * frame_size)


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
    if size > _largest(len(frame)):
        raise ArtifactError(f"{what} declares {size} bytes once decompressed from {len(frame)}: over 256 MiB and "
                            f"more than {_MAX_RATIO} times its size, which no writer writes; the file is corrupt")
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
