"""Shared computation: models that begin with the same nodes over the same weights run them once."""

from __future__ import annotations

import collections

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from popfuse.fusion.dispatch.sharing import group_models, signatures
from popfuse.fusion.graph import subgraphs
from popfuse.fusion.passes.namespace import add_namespace
from popfuse.runtime import Runner, RuntimeConfig
from popfuse.runtime.artifact import read_artifact
from tests.models import backbone_model, if_model, ppocr_input, ppocr_path, scale_model

LENIENT = RuntimeConfig(validate_io_params=False)
WIDTH, DEPTH = 128, 2  # 64 KB per backbone weight: at the threshold


def op_counts(path) -> collections.Counter:
    def count(graph, into):
        for node in graph.node:
            into[node.op_type] += 1
            for sub in subgraphs(node):
                count(sub, into)
        return into

    return count(onnx.load_from_string(bytes(read_artifact(path).executable)).graph, collections.Counter())


def reference(model: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)


def heads(*seeds: int) -> list[onnx.ModelProto]:
    return [backbone_model(seed, WIDTH, DEPTH) for seed in seeds]


def test_signatures_ignore_names():
    model = scale_model(2.0)
    a = add_namespace(model, "graph0/").model.graph
    b = add_namespace(model, "graph1/").model.graph
    sa, sb = signatures(a), signatures(b)
    assert [sa[o.name] for o in a.output] == [sb[o.name] for o in b.output]
    assert signatures(add_namespace(scale_model(3.0), "graph1/").model.graph)["graph1/O"] != sa["graph0/O"]


def test_a_node_holding_a_subgraph_is_never_shared():
    model = if_model()
    a, b = (add_namespace(model, f"graph{i}/").model.graph for i in (0, 1))
    assert signatures(a)["graph0/O"] != signatures(b)["graph1/O"]


def test_grouping_needs_the_threshold_of_shared_weights():
    small = [add_namespace(scale_model(2.0, n=2048), f"graph{i}/").model.graph for i in (0, 1)]
    assert [g.members for g in group_models(small)] == [(0,), (1,)]
    assert [g.members for g in group_models(small, min_shared_bytes=8192)] == [(0, 1)]


def test_distinct_models_are_told_apart_without_walking_a_graph_per_pair(monkeypatch):
    # Grouping walked the group's graph for every pair of models, so building N distinct models (a
    # multi-tenant fusion) took time quadratic in N: 10 s of a 58 s build of 128 classifiers.
    from popfuse.fusion.dispatch import sharing

    walked = []
    walk = sharing._prefix_nodes
    monkeypatch.setattr(sharing, "_prefix_nodes", lambda *args: walked.append(args) or walk(*args))
    distinct = [add_namespace(scale_model(1.0 + i, n=2048), f"graph{i}/").model.graph for i in range(12)]
    assert [g.members for g in group_models(distinct, min_shared_bytes=1)] == [(i,) for i in range(12)]
    assert walked == []
    twins = [add_namespace(scale_model(2.0, n=2048), f"graph{i}/").model.graph for i in (0, 1)]
    assert [g.members for g in group_models(twins, min_shared_bytes=1)] == [(0, 1)]


def test_two_heads_run_their_backbone_once(make_artifact):
    models = heads(1, 2, 3)
    path = make_artifact(models)
    # Three heads on one backbone: the backbone's MatMuls once, then one MatMul per head.
    assert op_counts(path)["MatMul"] == DEPTH + 3
    artifact = read_artifact(path)
    assert artifact.fusion_map.shared_weight_bytes == 2 * DEPTH * WIDTH * WIDTH * 4
    runner = Runner(path, LENIENT)
    x = np.random.default_rng(0).random((1, WIDTH), dtype=np.float32)
    for i, model in enumerate(models):
        (out,) = runner.execute({f"graph{i}/X": x}).values()
        np.testing.assert_allclose(out, reference(model, {"X": x})[0], rtol=1e-5, atol=1e-6)


def test_the_same_model_twice_is_one_computation(make_artifact):
    model = backbone_model(1, WIDTH, DEPTH)
    path = make_artifact([model, model])
    counts = op_counts(path)
    assert counts["MatMul"] == DEPTH + 1 and counts["If"] == 0
    runner = Runner(path, LENIENT)
    x = np.random.default_rng(1).random((1, WIDTH), dtype=np.float32)
    a = runner.execute({"graph0/X": x})["graph0/logits"]
    b = runner.execute({"graph1/X": x})["graph1/logits"]
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(a, reference(model, {"X": x})[0], rtol=1e-5, atol=1e-6)


def test_a_group_whose_members_are_not_neighbours(make_artifact):
    # 0 and 2 share a backbone, 1 does not: the index is mapped to its group before the tree.
    models = [heads(1)[0], scale_model(2.0, n=WIDTH), heads(2)[0], scale_model(3.0, n=WIDTH)]
    path = make_artifact(models)
    assert op_counts(path)["MatMul"] == DEPTH + 2
    runner = Runner(path, LENIENT)
    x = np.random.default_rng(2).random((1, WIDTH), dtype=np.float32)
    for i, model in enumerate(models):
        name = model.graph.input[0].name
        (out,) = runner.execute({f"graph{i}/{name}": x}).values()
        np.testing.assert_allclose(out, reference(model, {name: x})[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shared", ["cls"])
def test_real_model_twice_beside_another_runs_once(make_artifact, shared):
    cls, det = onnx.load(ppocr_path(shared)), onnx.load(ppocr_path("det"))
    alone = op_counts(make_artifact([cls, det], name="alone.popef"))
    twice = make_artifact([cls, det, cls], name="twice.popef")
    assert op_counts(twice)["Conv"] == alone["Conv"]
    runner = Runner(twice, LENIENT)
    x = ppocr_input(shared)
    expected = reference(cls, {"x": x})[0]
    for i in (0, 2):
        got = runner.execute({f"graph{i}/x": x})[f"graph{i}/save_infer_model/scale_0.tmp_1"]
        np.testing.assert_allclose(got, expected,
                                   rtol=1e-5, atol=1e-6)
