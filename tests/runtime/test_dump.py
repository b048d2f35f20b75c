"""popfuse dump's description and tables: columns as wide as their content, the file's own size."""

from __future__ import annotations

import os

from popfuse.fusion import ModelOptions
from popfuse.runtime.display import table
from popfuse.runtime.dump import describe, render
from tests.models import scale_model


def test_columns_fit_the_longest_name_and_the_size_is_the_files(make_artifact):
    long = "ch_PP-OCRv4_det_infer_fp16_with_a_longer_name"
    path = make_artifact([scale_model(), scale_model()], [ModelOptions(name="a"), ModelOptions(name=long)])
    info = describe(path)
    assert info["size"] == os.path.getsize(path) > info["payloadBytes"]
    anchors = render(info).split("Anchors:\n")[1].split("\n\n")[0].splitlines()
    starts = {line.index("INPUT") if "INPUT" in line else line.index("OUTPUT") for line in anchors[1:]}
    assert len(starts) == 1  # the type column starts at one place on every row


def test_a_table_is_as_wide_as_its_widest_cell():
    lines = table(("a", "b"), [("long cell", 1), ("x", 22)], indent="")
    assert lines == ["a          b", "long cell  1", "x          22"]
