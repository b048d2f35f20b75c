"""Weights after compilation: hoisted out of the branches, stored once, outside the graph."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

import fusion
from fusion import ModelOptions, compile_artifact, fuse
from fusion.passes.weights import HOISTED_PREFIX, externalize_weights, hoist_weights
from fusion.rename import subgraphs
from runtime import Runner, RuntimeConfig
from runtime.artifact import write_artifact
from tests.models import ppocr_input, ppocr_path, scale_model

LENIENT = RuntimeConfig(validate_io_params=False)


def branch_initializers(graph: onnx.GraphProto) -> list[str]:
    names = []
    for node in graph.node:
        for sub in subgraphs(node):
            names += [t.name for t in sub.initializer] + branch_initializers(sub)
    return names


def test_identical_weights_are_stored_once(tmp_path):
    artifact = compile_artifact(fuse([scale_model(2.0, n=256), scale_model(2.0, n=256)]), "onnxruntime-cpu")
    assert artifact.fusion_map.shared_weights >= 1
    assert artifact.fusion_map.shared_weight_bytes >= 256 * 4
    # One copy of the 1 KB weight B reaches the weights blob; the second copy is shared.
    assert len(artifact.tensors["weights"]) == 256 * 4
    path = tmp_path / "twice.popef"
    write_artifact(path, artifact)
    runner = Runner(path, LENIENT)
    x = np.ones((1, 256), np.float32)
    for i in (0, 1):
        np.testing.assert_allclose(runner.execute({f"graph{i}/X": x})[f"graph{i}/O"], 2 + np.arange(256)[None])


def test_compiled_branches_keep_only_what_they_return():
    artifact = compile_artifact(fuse([scale_model(2.0, n=300), scale_model(3.0, n=301)]), "onnxruntime-cpu")
    compiled = onnx.load_from_string(bytes(artifact.executable))
    returned = set()

    def collect(graph):
        for node in graph.node:
            for sub in subgraphs(node):
                returned.update(o.name for o in sub.output)
                collect(sub)

    collect(compiled.graph)
    assert set(branch_initializers(compiled.graph)) <= returned
    external = [t for t in compiled.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    # The two 1.2 KB weights B leave the protobuf; the scalar factors stay inline.
    assert len(external) == 2 and all(t.name.startswith(HOISTED_PREFIX) for t in external)
    assert all(e.value == "weights" for t in external for e in t.external_data if e.key == "location")


def test_hoisting_renames_against_sibling_collisions():
    # Two branches each hold a different tensor under the same name, as optimisers produce.
    model = onnx.parser.parse_model(
        """
        <ir_version: 10, opset_import: ["" : 17]>
        agraph (bool c, float[2] x) => (float[2] y)
        {
            y = If(c) <
                then_branch = g1 () => (float[2] a) <float[2] w = {1.0, 2.0}> { a = Add(x, w) },
                else_branch = g2 () => (float[2] b) <float[2] w = {5.0, 6.0}> { b = Add(x, w) }
            >
        }
        """
    )
    hoisted, dropped, _ = hoist_weights(model)
    assert dropped == 0
    assert sorted(t.name for t in hoisted.graph.initializer) == ["weights/0", "weights/1"]
    assert branch_initializers(hoisted.graph) == []
    onnx.checker.check_model(hoisted)


def test_externalize_keeps_small_tensors_inline():
    model = scale_model(n=512)
    out, payload = externalize_weights(model, "weights", min_bytes=1024)
    by_name = {t.name: t for t in out.graph.initializer}
    assert by_name["B"].data_location == onnx.TensorProto.EXTERNAL
    assert by_name["f"].data_location == onnx.TensorProto.DEFAULT
    assert np.frombuffer(payload, np.float32).tolist() == list(np.arange(512, dtype=np.float32))
    assert model.graph.initializer[0].HasField("raw_data") or model.graph.initializer[0].float_data


@pytest.mark.parametrize("name", ["cls"])
def test_same_real_model_twice_shares_all_weights(tmp_path, name):
    model = onnx.load(ppocr_path(name))
    once = compile_artifact(fuse([model]), "onnxruntime-cpu")
    twice = compile_artifact(fuse([model, model], [ModelOptions(name="a"), ModelOptions(name="b")]), "onnxruntime-cpu")
    def stored(artifact):
        return len(artifact.executable) + sum(len(t) for t in artifact.tensors.values())

    # The second copy adds its graph, not its weights.
    assert stored(twice) < 1.1 * stored(once)
    assert twice.fusion_map.shared_weight_bytes >= 0.9 * len(once.tensors["weights"])
    path = tmp_path / "twice.popef"
    write_artifact(path, twice)
    runner = Runner(path, LENIENT)
    x = ppocr_input(name)
    (a,) = runner.execute({"graph0/x": x}).values()
    (b,) = runner.execute({"graph1/x": x}).values()
    np.testing.assert_array_equal(a, b)


def test_build_reports_what_compilation_shared(tmp_path):
    onnx.save(scale_model(2.0, n=512), tmp_path / "a.onnx")
    result = fusion.build(
        {"output_dir": str(tmp_path), "model_fusion": [{"input_model": str(tmp_path / "a.onnx"), "name": n} for n in "xy"]}
    )
    assert result.fusion_map.shared_weight_bytes >= 512 * 4
