"""Reading an artifact's header: the metadata and fusion map from the front of the file, and its size."""

from __future__ import annotations

import io
import struct
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from popfuse.fusion import compile_artifact, fuse_models
from popfuse.runtime import Runner
from popfuse.runtime.artifact import read_artifact, read_header, to_blobs
from popfuse.runtime.errors import ArtifactError
from popfuse.runtime.popef import FORMAT_VERSION, Blob, BlobType, encode_header, iter_encoded, read_blobs, write_blobs
from tests.models import scale_model


class CountingReader(io.BytesIO):
    """A stream that remembers how far into it anything was read."""

    furthest = 0

    def read(self, size: int = -1) -> bytes:
        data = super().read(size)
        self.furthest = max(self.furthest, self.tell())
        return data


def test_a_changed_weight_is_refused_though_its_digest_is_checked_while_the_records_are_read(make_artifact,
                                                                                                tmp_path):
    path = make_artifact([scale_model(2.0, n=2048), scale_model(3.0, n=2048)])
    blobs = read_blobs(path)
    number = next(i for i, b in enumerate(blobs) if b.type == BlobType.TENSOR)
    data = bytearray(path.read_bytes())
    data[data.find(bytes(blobs[number].payload[:64])) + 100] ^= 1
    changed = tmp_path / "changed.popef"
    changed.write_bytes(bytes(data))
    for load in (read_artifact, Runner):
        with pytest.raises(ArtifactError, match=rf"changed.popef: blob {number} at byte \d+: the contents are corrupt "
                                                r"or were changed \(SHA-256 mismatch\)"):
            load(changed)


def test_the_header_gives_records_and_size_without_the_rest(make_artifact):
    path = make_artifact([scale_model(2.0), scale_model(3.0)])
    header = read_header(path)
    artifact = read_artifact(path)
    assert (header.metadata, header.fusion_map) == (artifact.metadata, artifact.fusion_map)
    assert header.size == path.stat().st_size
    stream = CountingReader(path.read_bytes())
    assert read_header(stream, "stream") == header
    # Only the metadata and the fusion map were read, up to the end of the second blob (its total size is
    # the 8 bytes at 16 of its header): not the executable nor the weights after them.
    data = path.read_bytes()
    first = struct.unpack_from("<Q", data, 16)[0]
    assert stream.furthest == first + struct.unpack_from("<Q", data, first + 16)[0] < header.size


def test_a_truncated_file_is_refused_by_its_size(make_artifact, tmp_path):
    path = make_artifact([scale_model()])
    cut = tmp_path / "cut.popef"
    cut.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ArtifactError, match=r"cut.popef: the file has \d+ bytes, but its metadata lists blobs of \d+"):
        read_header(cut)


def test_blobs_a_later_writer_appended_count_in_the_size(make_artifact):
    path = make_artifact([scale_model()])
    extra = Blob(77, "from-a-future-writer", b"x" * 100)
    before = path.stat().st_size
    path.write_bytes(path.read_bytes() + encode_header(extra, before) + extra.payload)
    assert read_header(path).size == path.stat().st_size > before


def test_a_file_without_the_fusion_map_second_is_refused_before_reading_on(make_artifact, tmp_path):
    meta, fusion_map, *rest = to_blobs(read_artifact(make_artifact([scale_model()])))
    path = tmp_path / "reordered.popef"
    write_blobs(path, [meta, *rest, fusion_map])
    with pytest.raises(ArtifactError, match=r"reordered.popef: blob 1 at byte \d+: a blob of type 2, expected opaque"):
        read_header(path)
    write_blobs(path, [meta, Blob(BlobType.OPAQUE, "notes", b"{}"), fusion_map, *rest])
    with pytest.raises(ArtifactError, match="blob 1 is 'notes', expected the fusion map"):
        read_header(path)


def test_the_header_records_are_checked_against_each_other(make_artifact, tmp_path):
    # A consistent file (every SHA-256 right) whose fusion map names a subgraph index that is not its position:
    # refused from the header alone, as a full read refuses it.
    artifact = read_artifact(make_artifact([scale_model(2.0), scale_model(3.0)]))
    first, second = artifact.fusion_map.subgraphs
    edited = replace(artifact, fusion_map=replace(artifact.fusion_map, subgraphs=(first, replace(second, index=5))))
    path = tmp_path / "edited.popef"
    write_blobs(path, to_blobs(edited))
    message = r"edited.popef: the records disagree: FusionMap.subgraphs\[1\].index: is 5"
    with pytest.raises(ArtifactError, match=message):
        read_artifact(path)
    with pytest.raises(ArtifactError, match=message):
        read_header(path)


def test_an_older_format_is_refused_before_its_checksum(make_artifact):
    data = bytearray(make_artifact([scale_model()]).read_bytes())
    struct.pack_into("<H", data, 4, 1)  # format 1's header has another size: its checksum means nothing here
    message = (rf"old: blob 0 at byte 0: format version 1 is older than this popfuse reads \({FORMAT_VERSION}\); "
               r"rebuild it with `popfuse build CONFIG\.yaml`")
    with pytest.raises(ArtifactError, match=message):
        read_header(io.BytesIO(bytes(data)), "old")


@pytest.mark.parametrize("name, message", [
    ("absent.popef", "absent.popef: no such artifact file"),
    (".", "is a folder"),
])
def test_missing_files_and_folders(tmp_path, name, message):
    with pytest.raises(ArtifactError, match=message):
        read_header(tmp_path / name)


@pytest.fixture(scope="module")
def original() -> bytes:
    return b"".join(iter_encoded(to_blobs(compile_artifact(fuse_models([scale_model()]), "onnxruntime-cpu"))))


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_damaged_fronts_are_refused_cleanly(original, data):
    # Untrusted bytes from storage: whatever the damage, the header is the real one or an ArtifactError.
    real = read_header(io.BytesIO(original), "stream")
    damaged = bytearray(original[: data.draw(st.integers(0, len(original)))])
    for _ in range(data.draw(st.integers(0, 3))):
        if damaged:
            damaged[data.draw(st.integers(0, len(damaged) - 1))] = data.draw(st.integers(0, 255))
    try:
        header = read_header(io.BytesIO(bytes(damaged)), "stream")
    except ArtifactError:
        return
    assert (header.metadata, header.fusion_map) == (real.metadata, real.fusion_map)
