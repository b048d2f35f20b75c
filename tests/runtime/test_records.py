"""Typed records: canonical JSON out, every field checked on the way in, errors that name the field."""

from __future__ import annotations

import json
import re

import pytest

from popfuse.runtime import metadata as md
from popfuse.runtime.errors import ArtifactError
from popfuse.runtime.records import MAX_DEPTH, RecordError, dumps, loads


def subgraph(**changes) -> dict:
    doc = {"index": 0, "name": "a", "source": "a.onnx", "sha256": "0" * 64, "precision": "fp32", "opset": 17,
           "inputs": ["graph0/X"], "outputs": ["graph0/O"], "localNames": {"graph0/X": "X", "graph0/O": "O"}}
    return {**doc, **changes}


def fusion_map(**changes) -> bytes:
    return json.dumps({"subgraphs": [subgraph(**changes)], "indexAnchor": "index"}).encode()


def test_round_trip_is_canonical_and_uses_popef_names():
    record = md.Anchor("graph0/X", md.TensorInfo((-1, 4), "F32"), md.INPUT)
    data = dumps(record)
    assert data == b'{"name":"graph0/X","programs":[0],"tensorInfo":{"dataType":"F32","shape":[-1,4]},"type":"INPUT"}'
    assert loads(md.Anchor, data, "anchor") == record
    fm = loads(md.FusionMap, fusion_map(), "fusion map")
    assert fm.subgraphs[0].local_name("graph0/O") == "O" and fm.shared_weights == 0


@pytest.mark.parametrize(
    "changes, where, problem",
    [
        ({"index": "0"}, "FusionMap.subgraphs[0].index", "expected an integer, received str"),
        ({"index": True}, "FusionMap.subgraphs[0].index", "expected an integer, received bool"),
        ({"index": -2}, "FusionMap.subgraphs[0].index", "must be at least 0, received -2"),
        ({"inputs": [["graph0/X"]]}, "FusionMap.subgraphs[0].inputs[0]", "expected a string, received list"),
        ({"localNames": {"graph0/X": 3}}, "FusionMap.subgraphs[0].localNames.graph0/X", "expected a string"),
        ({"opset": None}, "FusionMap.subgraphs[0].opset", "expected an integer, received null"),
    ],
)
def test_a_field_of_the_wrong_type_or_range_is_named(changes, where, problem):
    with pytest.raises(RecordError, match="^" + re.escape(f"{where}: {problem}")):
        loads(md.FusionMap, fusion_map(**changes), "FusionMap")


def test_missing_fields_unknown_choices_and_non_json():
    with pytest.raises(RecordError, match=r"FusionMap.indexAnchor: missing"):
        loads(md.FusionMap, b'{"subgraphs": []}', "FusionMap")
    anchor = {"name": "x", "tensorInfo": {"shape": [1], "dataType": "F33"}, "type": "INPUT"}
    with pytest.raises(RecordError, match=r"Anchor.tensorInfo.dataType: must be one of .*'F32'.*received 'F33'"):
        loads(md.Anchor, json.dumps(anchor).encode(), "Anchor")
    with pytest.raises(RecordError, match="Anchor: not UTF-8"):
        loads(md.Anchor, b"\xff\xfe", "Anchor")
    with pytest.raises(RecordError, match="Anchor: not JSON"):
        loads(md.Anchor, b"{", "Anchor")


def test_deep_nesting_is_refused_before_parsing():
    deep = b"[" * 50_000 + b"]" * 50_000
    with pytest.raises(RecordError, match=f"nested 50000 levels deep; a record nests at most {MAX_DEPTH}"):
        loads(md.FusionMap, deep, "FusionMap")
    brackets_in_strings = json.dumps({"subgraphs": [], "indexAnchor": "[" * 100}).encode()
    assert loads(md.FusionMap, brackets_in_strings, "FusionMap").index_anchor == "[" * 100


def test_the_metadata_reader_names_the_artifact_and_how_to_fix_it():
    with pytest.raises(ArtifactError, match=r"^x.popef: the FusionMap record is malformed: .*index.*popfuse build"):
        md.loads(md.FusionMap, fusion_map(index=-1), "x.popef")
