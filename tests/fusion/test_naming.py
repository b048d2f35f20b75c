"""The fused graph's names, made in one place and recorded in the fusion map."""

from __future__ import annotations

import pytest

from popfuse.fusion import fuse_models, naming
from tests.models import multi_output_model, scale_model


def test_anchors_are_poprt_names_and_local_names_invert_them():
    assert naming.anchor(2, "x") == "graph2/x" and naming.namespace(2) == "graph2/"
    assert naming.local_name(2, "graph2/save_infer_model/scale_0.tmp_1") == "save_infer_model/scale_0.tmp_1"
    with pytest.raises(ValueError, match="not an anchor of subgraph 1"):
        naming.local_name(1, "graph2/x")


def test_the_fusion_map_records_every_anchors_own_name():
    fused = fuse_models([scale_model(), multi_output_model()])
    assert fused.fusion_map.index_anchor == naming.INDEX == fused.anchors[0].name
    second = fused.fusion_map.subgraphs[1]
    assert {second.local_name(a) for a in (*second.inputs, *second.outputs)} == {"X", "A", "S", "B", "M", "K"}
    assert second.anchor("K") == "graph1/K" and second.anchor("nothing") is None


def test_slot_and_weight_names():
    assert naming.input_slot("F32", 1) == "slot_in/F32/1"
    assert naming.output_slot("S64", 0) == "slot/S64/0"
    assert naming.shared_weight(7).startswith(naming.WEIGHTS_PREFIX)


def test_a_name_says_which_subgraph_it_belongs_to():
    assert naming.subgraph_of(naming.anchor(3, "conv")) == 3
    assert naming.subgraph_of(naming.at(naming.output_slot("F32", 0), naming.model_position(12))) == 12
    assert [naming.subgraph_of(n) for n in ("graphx/a", naming.branch("root", "if"), naming.shared_weight(1))] == [
        None, None, None]
