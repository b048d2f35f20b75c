"""The checks between records: each forged edit that broke Runner, dump or dump --json with an untyped
exception now gives ArtifactError naming the field, from all three."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from popfuse.runtime import ArtifactError, Runner
from popfuse.runtime.compression import compress, decompress
from popfuse.runtime.dump import describe, render
from popfuse.runtime.popef import Blob, BlobType, read_blobs, write_blobs
from tests.models import if_model, multi_output_model, scale_model


@pytest.fixture(scope="module")
def intact(tmp_path_factory) -> Path:
    """Three subgraphs: X*2+B with a weight in the tensor blob, an If model, four outputs of two types."""
    from popfuse.fusion import compile_artifact, fuse_models
    from popfuse.runtime.artifact import write_artifact

    path = tmp_path_factory.mktemp("validation") / "executable.popef"
    write_artifact(path, compile_artifact(fuse_models([scale_model(n=300), if_model(), multi_output_model()]),
                                          "onnxruntime-cpu"))
    return path


def forge(source: Path, target: Path, blob: str, edit: Callable[[dict], None]) -> Path:
    """``source`` with one JSON record edited, written again with every size, digest and checksum recomputed,
    as someone editing the file on purpose would."""
    blobs = read_blobs(source)
    i = next(k for k, b in enumerate(blobs) if b.name == blob)
    doc = record(blobs[i])
    edit(doc)
    blobs[i] = Blob(blobs[i].type, blobs[i].name, compress(json.dumps(doc).encode()))
    write_blobs(target, with_sizes(blobs))
    return target


def record(blob: Blob) -> dict:
    """The JSON a record blob holds compressed."""
    return json.loads(decompress(blob.payload, 1 << 26, blob.name))


def with_sizes(blobs: list[Blob]) -> list[Blob]:
    """``blobs`` with the metadata's blob list stating each blob's size."""
    meta = record(blobs[0])
    sizes = {(b.type, b.name): len(b.payload) for b in blobs[1:]}
    for ref in meta["blobs"]:
        ref["size"] = sizes[(ref["type"], ref["name"])]
    return [Blob(BlobType.METADATA, "metadata", compress(json.dumps(meta).encode())), *blobs[1:]]


def set_path(path: str, value) -> Callable[[dict], None]:
    """An edit that sets the value at ``a.b.0.c`` to ``value``."""
    *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]

    def edit(doc: dict) -> None:
        for key in parents:
            doc = doc[key]
        doc[last] = value(doc[last]) if callable(value) else value

    return edit


def weight_with_negative_dims(doc: dict) -> None:
    doc["tensorData"][0]["tensorInfo"]["shape"] = [-1, 300, -1]  # the product still matches the size


FORGERIES = [
    ("fusion_map", set_path("subgraphs.0.inputs.0", "nope"),
     r"FusionMap\.subgraphs\[0\]\.inputs\[0\]: 'nope' is not an anchor"),
    ("fusion_map", set_path("subgraphs.1.outputs", lambda v: [*v, "graph0/O"]),
     r"FusionMap\.subgraphs\[1\]\.outputs\[1\]: 'graph0/O' already belongs to subgraph 0"),
    ("fusion_map", set_path("subgraphs.0.inputs.0", "graph0/O"),
     r"'graph0/O' is an OUTPUT anchor, listed as INPUT"),
    ("fusion_map", set_path("subgraphs.2.index", 7), r"subgraphs\[2\]\.index: is 7; a subgraph.s index is its"),
    ("fusion_map", set_path("subgraphs", lambda v: v[:1]), r"'graph1/X' belongs to no subgraph"),
    ("fusion_map", set_path("subgraphs", []), r"FusionMap\.subgraphs: empty"),
    ("fusion_map", set_path("subgraphs.1.name", "model0"), r"'model0' is listed more than once"),
    ("fusion_map", set_path("indexAnchor", "graph0/X"), r"FusionMap\.indexAnchor: 'graph0/X' must be an INPUT of U32"),
    ("fusion_map", set_path("subgraphs.0.localNames", {"graph0/X": "X"}), r"subgraphs\[0\]\.localNames: must name"),
    ("metadata", set_path("anchors.1.tensorInfo.dataType", "S64"), r"Metadata\.slots\.inputs: 0 slot\(s\) of S64"),
    ("metadata", set_path("anchors.2", lambda a: {**a, "name": "graph0/X"}), r"'graph0/X' is listed more than once"),
    ("metadata", set_path("anchors.1.tensorInfo.shape", [2**62, 2**62]), r"holds over 281474976710656 elements"),
    ("metadata", set_path("slots.inputs", lambda v: {**v, "F33": ["x"]}), r"unknown data type 'F33'"),
    ("metadata", set_path("slots.outputs.F32", lambda v: v[:1]), r"1 slot\(s\) of F32, but subgraph 2 has 3"),
    ("metadata", weight_with_negative_dims, r"tensorData\[0\]\.tensorInfo\.shape: \[-1, 300, -1\] has a negative"),
    ("metadata", set_path("tensorData.0.tensorInfo.shape", [301]), r"tensorData\[0\]\.size: is 1200, but F32 \[301\]"),
    ("metadata", set_path("tensorData.0.offset", 64), r"1200 bytes at 64 reach past the end of tensor blob"),
    ("metadata", set_path("tensorData.0.blob", "gone"), r"tensorData\[0\]\.blob: no tensor blob 'gone'"),
    ("metadata", set_path("anchors", lambda v: [[a] for a in v]), r"Metadata\.anchors\[0\]: expected an object"),
    ("metadata", set_path("programFlow", "[" * 40 + "]" * 40), r"expected an object, received str"),
]


@pytest.mark.parametrize("blob, edit, match", FORGERIES, ids=[f[2][:40] for f in FORGERIES])
def test_a_forged_record_is_an_artifact_error_naming_the_field(intact, tmp_path, blob, edit, match):
    path = forge(intact, tmp_path / "forged.popef", blob, edit)
    with pytest.raises(ArtifactError, match=match):
        Runner(path)
    with pytest.raises(ArtifactError, match=match):
        render(describe(path))  # popfuse dump, and its --json form, read the same records


def test_json_nested_deeper_than_a_record_is_refused_by_runner_and_dump(intact, tmp_path):
    deep = compress(b"[" * 100_000 + b"]" * 100_000)
    blobs = [Blob(b.type, b.name, deep) if b.name == "fusion_map" else b for b in read_blobs(intact)]
    path = tmp_path / "deep.popef"
    write_blobs(path, with_sizes(blobs))
    for load in (Runner, describe):
        with pytest.raises(ArtifactError, match="nested 100000 levels deep"):
            load(path)


def test_the_intact_artifact_passes_every_check(intact):
    info = describe(intact)
    assert [s["index"] for s in info["opaques"]["fusion_map"]["subgraphs"]] == [0, 1, 2]
    assert Runner(intact).subgraphs[2].name == "model2"


@pytest.mark.parametrize("args", [[], ["--json"]], ids=["dump", "dump --json"])
def test_popfuse_dump_of_a_forged_artifact_prints_one_line(intact, tmp_path, capsys, args):
    from popfuse.cli import main

    path = forge(intact, tmp_path / "forged.popef", "fusion_map", set_path("subgraphs.0.inputs.0", "nope"))
    assert main(["dump", str(path), *args]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'nope' is not an anchor" in err and "Traceback" not in err
