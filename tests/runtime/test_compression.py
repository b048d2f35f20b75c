"""The compressed frames of an artifact's records and executable: round trips, bounded decoding, typed errors."""

from __future__ import annotations

import lzma
import struct
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from popfuse.runtime.compression import compress, decompress
from popfuse.runtime.errors import ArtifactError

FAST = settings(max_examples=200, deadline=None, derandomize=True, database=None)


@FAST
@given(data=st.binary(max_size=20_000))
def test_a_frame_holds_its_bytes_and_the_same_bytes_give_the_same_frame(data):
    frame = compress(data)
    assert struct.unpack_from("<Q", frame) == (len(data),)
    assert decompress(frame, len(data), "x") == data
    assert compress(data) == frame


@FAST
@given(frame=st.binary(max_size=200))
def test_any_bytes_decode_or_raise_an_artifact_error(frame):
    try:
        data = decompress(frame, 1 << 20, "x.popef: the metadata")
    except ArtifactError as e:
        assert str(e).startswith("x.popef: the metadata ")
    else:
        assert len(data) == struct.unpack_from("<Q", frame)[0]


@FAST
@given(data=st.binary(min_size=1, max_size=2000), at=st.integers(min_value=0), bit=st.integers(0, 7))
def test_a_flipped_bit_decodes_to_the_declared_size_or_is_refused(data, at, bit):
    frame = bytearray(compress(data))
    frame[at % len(frame)] ^= 1 << bit
    try:
        decoded = decompress(bytes(frame), 1 << 20, "x")
    except ArtifactError:
        return
    assert len(decoded) == struct.unpack_from("<Q", frame)[0]


def test_a_declared_size_over_the_limit_is_refused_before_anything_is_decoded():
    bomb = compress(bytes(8 << 20))
    assert len(bomb) < 2000
    with pytest.raises(ArtifactError, match=r"x declares 8388608 bytes once decompressed, over the 1048576 a reader"):
        decompress(bomb, 1 << 20, "x")


def test_a_frame_declaring_far_more_than_its_stream_could_hold_is_refused_before_decoding():
    # A few kilobytes of zeros' stream declaring 1 GiB: within the executable's 2 GiB limit, a small forged file
    # would make the reader allocate all of it.
    bomb = struct.pack("<Q", 1 << 30) + compress(bytes(16 << 20))[8:]
    with pytest.raises(ArtifactError, match=r"x declares 1073741824 bytes once decompressed from \d+: over 256 MiB "
                                            r"and more than 1024 times its size"):
        decompress(bomb, 1 << 31, "x")


def test_a_graph_that_returns_a_constant_of_zeros_still_reads():
    # A constant a graph returns stays in the executable, and zeros shrink far past any ratio of real graphs.
    zeros = bytes(1 << 20)
    assert decompress(compress(zeros), 1 << 31, "x") == zeros


def test_a_stream_that_holds_more_than_it_declares_is_cut_at_the_declared_size():
    # 64 MiB of zeros behind a frame that declares 1,000 bytes: decoding stops one byte past them.
    stream = lzma.compress(bytes(64 << 20), format=lzma.FORMAT_RAW,
                           filters=[{"id": lzma.FILTER_LZMA2, "preset": 0, "dict_size": 4096}])
    tracemalloc.start()
    try:
        with pytest.raises(ArtifactError, match=r"does not decompress to the 1000 bytes it declares"):
            decompress(struct.pack("<Q", 1000) + stream, 1 << 20, "x")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


@pytest.mark.parametrize(
    "frame, match",
    [
        (b"\x01\x02", r"x is truncated: 2 bytes, a compressed blob starts with 8"),
        (struct.pack("<Q", 4) + b"\xff" * 16, r"x is corrupt: its compressed stream does not decode"),
        (compress(b"abcd")[:-2], r"x does not decompress to the 4 bytes it declares"),
        (compress(b"abcd") + b"more", r"x does not decompress to the 4 bytes it declares"),
        (struct.pack("<Q", 5) + compress(b"abcd")[8:], r"x does not decompress to the 5 bytes it declares"),
    ],
)
def test_a_damaged_frame_is_an_artifact_error(frame, match):
    with pytest.raises(ArtifactError, match=match):
        decompress(frame, 1 << 20, "x")
