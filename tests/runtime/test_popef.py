"""The PopEF-structured container: round trips, skipping unknown blobs, and damage detection."""

from __future__ import annotations

import hashlib
import json
import os
import struct
import zlib

import onnx
import pytest

from popfuse.runtime import metadata as md
from popfuse.runtime.artifact import read_artifact, to_blobs
from popfuse.runtime.compression import compress, decompress
from popfuse.runtime.errors import ArtifactError, OutputError
from popfuse.runtime.popef import HEADER_SIZE, Blob, BlobType, encode_header, read_blobs, release_pages, write_blobs
from tests.models import scale_model


def test_round_trip_keeps_type_name_and_payload(tmp_path):
    blobs = [Blob(BlobType.METADATA, "metadata", b"{}"), Blob(BlobType.TENSOR, "w/ü", bytes(range(256)))]
    path = tmp_path / "a.popef"
    size = write_blobs(path, blobs)
    assert size == path.stat().st_size
    back = read_blobs(path)
    assert [(b.type, b.name, bytes(b.payload)) for b in back] == [(b.type, b.name, b.payload) for b in blobs]
    assert [(b.type, b.name, bytes(b.payload)) for b in read_blobs(path.read_bytes())] == [
        (b.type, b.name, b.payload) for b in blobs
    ]


def test_unknown_blob_types_are_skipped_by_the_artifact_reader(make_artifact, tmp_path):
    path = make_artifact([scale_model()])
    extra = Blob(77, "from-a-future-writer", b"x" * 100)
    path.write_bytes(path.read_bytes() + encode_header(extra) + extra.payload)
    assert [b.type for b in read_blobs(path)][-1] == 77
    artifact = read_artifact(path)
    assert artifact.fusion_map.subgraphs[0].name == "model0"


def test_header_records_version_type_and_total_size():
    blob = Blob(BlobType.OPAQUE, "n", b"abc")
    head = encode_header(blob)
    magic, version, btype, header_size, name_size, total, digest, crc = struct.unpack_from("<4sHHIIQ32sI", head)
    # 3 bytes of padding put the payload at byte 64.
    assert (magic, version, btype, header_size, name_size, total) == (b"PFEF", 3, 4, 63, 1, 63 + 1 + 3)
    assert digest == hashlib.sha256(b"nabc").digest() and crc == zlib.crc32(head[:56])
    assert len(head) == 64


def test_every_payload_starts_on_a_64_byte_boundary_of_the_file(tmp_path):
    names = ["metadata", "w", "a-longer-name/ü", ""]
    blobs = [Blob(BlobType.TENSOR, n, bytes(range(k * 7 + 1))) for k, n in enumerate(names)]
    path = tmp_path / "a.popef"
    write_blobs(path, blobs)
    data = path.read_bytes()
    offset = 0
    for blob in blobs:
        header_size, name_size, total = struct.unpack_from("<4sHHIIQI", data, offset)[3:6]
        assert (offset + header_size + name_size) % 64 == 0
        assert data[offset + header_size + name_size : offset + total] == blob.payload
        offset += total
    assert offset == len(data)


@pytest.mark.parametrize("cut", [1, 10, HEADER_SIZE + 3, -1, -50])
def test_truncated_artifact_is_an_artifact_error(make_artifact, cut):
    path = make_artifact([scale_model()])
    data = path.read_bytes()
    path.write_bytes(data[:cut] if cut > 0 else data[:cut])
    with pytest.raises(ArtifactError, match="truncated|missing"):
        read_artifact(path)


def test_artifact_cut_at_a_blob_boundary_is_detected(make_artifact):
    path = make_artifact([scale_model()])
    data = path.read_bytes()
    # Drop the last blob whole: every remaining blob is intact, but the metadata lists it.
    keep = 0
    for _ in read_blobs(path)[:-1]:
        keep += struct.unpack_from("<4sHHIIQI", data, keep)[5]
    assert keep < len(data)
    path.write_bytes(data[:keep])
    with pytest.raises(ArtifactError, match="missing"):
        read_artifact(path)


@pytest.mark.parametrize("where", ["header", "padding", "payload", "middle"])
def test_corrupt_byte_is_detected(make_artifact, where):
    path = make_artifact([scale_model()])
    data = bytearray(path.read_bytes())
    header_size = struct.unpack_from("<4sHHIIQI", data)[3]
    offset = {"header": 17, "padding": HEADER_SIZE + 1, "payload": header_size + 20, "middle": len(data) // 2}[where]
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="corrupt|inconsistent|truncated"):
        read_artifact(path)


def test_not_an_artifact(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(scale_model().SerializeToString())
    with pytest.raises(ArtifactError, match="not a popfuse artifact"):
        read_artifact(path)


def test_empty_and_missing_files(tmp_path):
    empty = tmp_path / "empty.popef"
    empty.write_bytes(b"")
    with pytest.raises(ArtifactError, match="empty"):
        read_artifact(empty)
    with pytest.raises(ArtifactError, match="no such artifact"):
        read_artifact(tmp_path / "absent.popef")
    with pytest.raises(ArtifactError, match="folder"):
        read_artifact(tmp_path)


def test_failed_write_leaves_no_file_behind(tmp_path):
    def blobs():
        yield Blob(BlobType.METADATA, "metadata", b"{}")
        raise OSError("disk full")

    path = tmp_path / "out.popef"
    with pytest.raises(OutputError, match="out.popef: cannot write: disk full"):
        write_blobs(path, blobs())
    assert os.listdir(tmp_path) == []


def test_failed_write_keeps_the_previous_file(tmp_path):
    path = tmp_path / "out.popef"
    write_blobs(path, [Blob(BlobType.OPAQUE, "old", b"1")])

    def blobs():
        yield Blob(BlobType.OPAQUE, "new", b"2")
        raise OSError("interrupted")

    with pytest.raises(OutputError):
        write_blobs(path, blobs())
    assert [b.name for b in read_blobs(path)] == ["old"]
    assert os.listdir(tmp_path) == ["out.popef"]


def test_the_records_and_the_executable_are_stored_compressed_and_read_back_whole(make_artifact):
    path = make_artifact([scale_model(2.0, n=300), scale_model(3.0)])
    artifact = read_artifact(path)
    stored = {b.name: b for b in read_blobs(path)}
    assert decompress(stored["executable"].payload, 1 << 31, "x") == artifact.executable
    onnx.load_from_string(artifact.executable)  # plain ONNX in memory
    for name, record in (("metadata", artifact.metadata), ("fusion_map", artifact.fusion_map)):
        assert json.loads(decompress(stored[name].payload, 1 << 26, "x")) == md.to_json(record)
    assert len(stored["executable"].payload) < len(artifact.executable) / 2
    # Tensor data is stored as it is, to be used in place.
    assert bytes(stored["weights"].payload) == bytes(artifact.tensors["weights"])


@pytest.mark.parametrize("blob", ["metadata", "fusion_map", "executable"])
@pytest.mark.parametrize(
    "payload, match",
    [
        (b"", r"is truncated: 0 bytes"),
        (struct.pack("<Q", 5) + b"not lzma", r"is corrupt: its compressed stream does not decode"),
        (compress(b"{}")[:-1], r"does not decompress to the 2 bytes it declares"),
        (struct.pack("<Q", 3) + compress(b"{}")[8:], r"does not decompress to the 3 bytes it declares"),
        (struct.pack("<Q", 1 << 40) + compress(b"{}")[8:], r"declares 1099511627776 bytes once decompressed, over"),
    ],
)
def test_a_bad_compressed_blob_is_an_artifact_error_naming_it(make_artifact, tmp_path, blob, payload, match):
    blobs = to_blobs(read_artifact(make_artifact([scale_model()])))
    i = next(k for k, b in enumerate(blobs) if b.name == blob)
    blobs[i] = Blob(blobs[i].type, blob, payload)
    if blob != "metadata":  # the metadata's blob list states the new size, as a forger would write it
        meta = json.loads(decompress(blobs[0].payload, 1 << 26, "x"))
        meta["blobs"] = [{**ref, "size": len(payload)} if ref["name"] == blob else ref for ref in meta["blobs"]]
        blobs[0] = Blob(BlobType.METADATA, "metadata", compress(json.dumps(meta).encode()))
    path = tmp_path / "bad.popef"
    write_blobs(path, blobs)
    what = {"metadata": "the Metadata record", "fusion_map": "the FusionMap record", "executable": "the executable"}
    with pytest.raises(ArtifactError, match=rf"bad\.popef: {what[blob]} (.*){match}"):
        read_artifact(path)


@pytest.mark.skipif(not os.path.exists("/proc/self/smaps"), reason="reads Linux's per-mapping RSS")
def test_released_pages_leave_the_process_but_the_data_stays_readable(tmp_path):
    size = 8 * 1024 * 1024
    path = tmp_path / "big.popef"
    data = bytes(range(256)) * (size // 256)
    write_blobs(path, [Blob(BlobType.TENSOR, "w", data)])
    (blob,) = read_blobs(path)  # checking the checksum reads every page
    assert resident_kb(path) * 1024 >= size // 2
    release_pages(blob.payload)
    assert resident_kb(path) * 1024 < size // 8
    assert bytes(blob.payload[:256]) == bytes(range(256)) and bytes(blob.payload[-1:]) == b"\xff"


def resident_kb(path) -> int:
    total, current = 0, None
    with open("/proc/self/smaps") as f:
        for line in f:
            parts = line.split()
            if "-" in parts[0] and len(parts) >= 5:
                current = parts[-1] if len(parts) >= 6 else None
            elif parts[0] == "Rss:" and current == str(path):
                total += int(parts[1])
    return total


@pytest.mark.parametrize("version", [1, 2])
def test_an_artifact_of_a_previous_format_is_refused_with_the_rebuild_hint(tmp_path, version):
    # Format 1's 32-byte header held CRC-32s where later formats hold a SHA-256: its own checksum cannot be read
    # as theirs, so the version decides first. Format 2 had this header, and stored the records uncompressed.
    if version == 1:
        head = struct.pack("<4sHHIIQI", b"PFEF", 1, 1, 64, 8, 64 + 8 + 2, 0)
        old = head + struct.pack("<I", zlib.crc32(head)) + b"\0" * 32 + b"metadata" + b"{}"
    else:
        head = struct.pack("<4sHHIIQ32s", b"PFEF", 2, 1, 56 + 4, 8, 60 + 8 + 2, hashlib.sha256(b"metadata{}").digest())
        old = head + struct.pack("<I", zlib.crc32(head)) + b"metadata" + b"{}"
    (tmp_path / "old.popef").write_bytes(old)
    with pytest.raises(ArtifactError, match=rf"format version {version} is older than this popfuse reads \(3\); rebu"):
        read_artifact(tmp_path / "old.popef")
