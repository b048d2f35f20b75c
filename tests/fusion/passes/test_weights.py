"""Weights after compilation: kept in their branches, stored once, outside the graph."""

from __future__ import annotations

import numpy as np
import onnx
import onnx.reference
import pytest

from popfuse import fusion
from popfuse.fusion import ModelOptions, compile_artifact, fuse_models
from popfuse.fusion.graph import subgraphs
from popfuse.fusion.naming import WEIGHTS_PREFIX
from popfuse.fusion.passes.weights import externalize_weights
from popfuse.runtime import Runner, RuntimeConfig
from popfuse.runtime.artifact import write_artifact
from tests.models import ppocr_input, ppocr_path, scale_model

LENIENT = RuntimeConfig(validate_io_params=False)


def branch_initializers(graph: onnx.GraphProto) -> list[str]:
    names = []
    for node in graph.node:
        for sub in subgraphs(node):
            names += [t.name for t in sub.initializer] + branch_initializers(sub)
    return names


def test_identical_weights_are_stored_once(tmp_path):
    n = 20_000
    artifact = compile_artifact(fuse_models([scale_model(2.0, n=n), scale_model(2.0, n=n)]), "onnxruntime-cpu")
    # The same model twice is one computation (test_sharing): neither B (80 KB) nor the scalar is held twice.
    assert artifact.fusion_map.shared_weights == 2
    assert artifact.fusion_map.shared_weight_bytes == n * 4 + 4
    # One copy of the 80 KB weight B reaches the weights blob; the second copy is shared.
    assert len(artifact.tensors["weights"]) == n * 4
    path = tmp_path / "twice.popef"
    write_artifact(path, artifact)
    runner = Runner(path, LENIENT)
    x = np.ones((1, n), np.float32)
    for i in (0, 1):
        np.testing.assert_allclose(runner.execute({f"graph{i}/X": x})[f"graph{i}/O"], 2 + np.arange(n)[None])


def test_large_weights_leave_the_protobuf_but_not_their_branch():
    big, small = 20_000, 200  # 80 KB and 800-byte weights B
    artifact = compile_artifact(fuse_models([scale_model(2.0, n=big), scale_model(3.0, n=small)]), "onnxruntime-cpu")
    compiled = onnx.load_from_string(bytes(artifact.executable))
    # Nothing large in the main graph: a branch reading an enclosing graph's weight gathers it on every run.
    assert all(t.data_location != onnx.TensorProto.EXTERNAL for t in compiled.graph.initializer)
    in_branches = branch_initializers_protos(compiled.graph)
    external = [t for t in in_branches if t.data_location == onnx.TensorProto.EXTERNAL]
    assert [list(t.dims) for t in external] == [[big]]
    assert external[0].name.startswith(WEIGHTS_PREFIX)
    assert all(e.value == "weights" for e in external[0].external_data if e.key == "location")
    assert any(list(t.dims) == [small] and t.data_location == onnx.TensorProto.DEFAULT for t in in_branches)
    # The metadata says where the weight lies, so the runtime needs no ONNX parser to find it.
    (ref,) = artifact.metadata.tensor_data
    assert (ref.name, ref.blob, ref.tensor_info.shape, ref.tensor_info.data_type) == (
        external[0].name, "weights", (big,), "F32")
    data = np.frombuffer(artifact.tensors["weights"], np.float32, big, ref.offset)
    np.testing.assert_array_equal(data, np.arange(big, dtype=np.float32))


def branch_initializers_protos(graph: onnx.GraphProto) -> list[onnx.TensorProto]:
    found = []
    for node in graph.node:
        for sub in subgraphs(node):
            found += list(sub.initializer) + branch_initializers_protos(sub)
    return found


def test_sibling_tensors_with_one_name_are_renamed_apart():
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
    result = externalize_weights(model, "weights", min_bytes=0)
    out, weights = result.model, result.details
    assert weights.shared == 0
    assert sorted(branch_initializers(out.graph)) == ["weights/0", "weights/1"]
    assert [n.input[1] for b in subgraphs(out.graph.node[0]) for n in b.node] == ["weights/0", "weights/1"]
    assert np.frombuffer(weights.payload, np.float32).tolist() == [1, 2] + [0] * 14 + [5, 6]


def test_the_same_contents_twice_in_one_graph_become_one_initializer():
    model = onnx.parser.parse_model(
        """
        <ir_version: 10, opset_import: ["" : 17]>
        agraph (float[2] x) => (float[2] y) <float[2] u = {1.0, 2.0}, float[2] v = {1.0, 2.0}>
        {
            s = Add(x, u)
            y = Mul(s, v)
        }
        """
    )
    result = externalize_weights(model, "weights", min_bytes=0)
    out, weights = result.model, result.details
    assert [t.name for t in out.graph.initializer] == ["weights/0"]
    assert [list(n.input) for n in out.graph.node] == [["x", "weights/0"], ["s", "weights/0"]]
    assert (weights.shared, weights.shared_bytes, len(weights.payload)) == (1, 8, 8)


def test_externalize_keeps_small_tensors_inline():
    model = scale_model(n=512)
    result = externalize_weights(model, "weights", min_bytes=1024)
    out, weights = result.model, result.details
    by_name = {t.name: t for t in out.graph.initializer}
    assert by_name["weights/0"].data_location == onnx.TensorProto.EXTERNAL
    assert by_name["f"].data_location == onnx.TensorProto.DEFAULT
    assert np.frombuffer(weights.payload, np.float32).tolist() == list(np.arange(512, dtype=np.float32))
    assert model.graph.initializer[0].HasField("raw_data") or model.graph.initializer[0].float_data


def test_weights_lie_in_the_order_a_run_reads_them_and_copied_ones_last():
    model = onnx.parser.parse_model(
        """
        <ir_version: 10, opset_import: ["" : 17]>
        agraph (float[1,2] x) => (float[1,2] y)
            <float[2] d = {5.0, 6.0}, float[2] c = {3.0, 4.0}, float[2,2] b = {1.0, 0.0, 0.0, 1.0}>
        {
            m = MatMul(x, b)
            a = Add(m, c)
            y = Mul(a, d)
        }
        """
    )

    # Declared d, c, b; read b, c, d.
    result = externalize_weights(model, "weights", min_bytes=0)
    out, weights = result.model, result.details
    floats = np.frombuffer(weights.payload, np.float32).tolist()
    assert floats[:4] == [1, 0, 0, 1] and floats[16:18] == [3, 4] and floats[32:] == [5, 6]

    # MatMul's B, which the backend copies when it opens the executable, moves after the others.
    def matmul_b(node, index, tensor):
        return node.op_type == "MatMul" and index == 1

    result = externalize_weights(model, "weights", min_bytes=0, copied_at_load=matmul_b)
    out, weights = result.model, result.details
    floats = np.frombuffer(weights.payload, np.float32).tolist()
    assert floats[:2] == [3, 4] and floats[16:18] == [5, 6] and floats[32:] == [1, 0, 0, 1]
    y = onnx.reference.ReferenceEvaluator(inline_payload(out, weights.payload)).run(
        None, {"x": np.array([[1, 2]], np.float32)})[0]
    np.testing.assert_array_equal(y, [[20, 36]])


def inline_payload(model: onnx.ModelProto, payload: bytes) -> onnx.ModelProto:
    """``model`` with its external tensors read back from ``payload``."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for t in out.graph.initializer:
        if t.data_location == onnx.TensorProto.EXTERNAL:
            where = {e.key: int(e.value) for e in t.external_data if e.key in ("offset", "length")}
            t.raw_data = payload[where["offset"] : where["offset"] + where["length"]]
            t.data_location = onnx.TensorProto.DEFAULT
            del t.external_data[:]
    return out


def test_real_model_weights_read_in_place_come_before_those_onnxruntime_prepacks():
    artifact = compile_artifact(fuse_models([onnx.load(ppocr_path("rec"))]), "onnxruntime-cpu")
    compiled = onnx.load_from_string(bytes(artifact.executable))
    readers: dict[str, set[str]] = {}

    def collect(graph):
        for node in graph.node:
            for index, name in enumerate(node.input):
                readers.setdefault(name, set()).add(f"{node.op_type}:{index}")
            for sub in subgraphs(node):
                collect(sub)

    collect(compiled.graph)
    offsets = {t.name: t.offset for t in artifact.metadata.tensor_data}
    prepacked = [offsets[n] for n in offsets if readers[n] <= {"MatMul:1", "FusedMatMul:1", "Gemm:1"}]
    in_place = [offsets[n] for n in offsets if any(r.startswith("Conv:") for r in readers[n])]
    # PP-OCRv4's recogniser: 4 MB of MatMul weights behind 6.6 MB of convolution weights.
    assert len(prepacked) >= 9 and len(in_place) >= 40
    assert max(in_place) < min(prepacked)


@pytest.mark.parametrize("name", ["rec"])
def test_same_real_model_twice_shares_all_weights(tmp_path, name):
    model = onnx.load(ppocr_path(name))
    once = compile_artifact(fuse_models([model]), "onnxruntime-cpu")
    twice = compile_artifact(fuse_models([model, model], [ModelOptions(name="a"), ModelOptions(name="b")]),
                             "onnxruntime-cpu")
    def stored(artifact):
        return len(artifact.executable) + sum(len(t) for t in artifact.tensors.values())

    # The second copy adds its graph and small tensors, not its large weights.
    assert stored(twice) < 1.2 * stored(once)
    assert twice.fusion_map.shared_weight_bytes >= 0.9 * len(once.tensors["weights"])
    path = tmp_path / "twice.popef"
    write_artifact(path, twice)
    runner = Runner(path, LENIENT)
    x = ppocr_input(name)
    (a,) = runner.execute({"graph0/x": x}).values()
    (b,) = runner.execute({"graph1/x": x}).values()
    np.testing.assert_array_equal(a, b)


def test_build_reports_what_compilation_shared(tmp_path):
    onnx.save(scale_model(2.0, n=20_000), tmp_path / "a.onnx")
    result = fusion.build(
        {"output_dir": str(tmp_path),
         "model_fusion": [{"input_model": str(tmp_path / "a.onnx"), "name": n} for n in "xy"]}
    )
    assert result.fusion_map.shared_weight_bytes == 20_000 * 4 + 4


def test_weights_shared_by_distant_models_are_stored_once(tmp_path):
    # Four models: 0 and 3 share B across the two halves of the dispatch tree.
    n = 2048
    widths = [(2.0, n), (3.0, n + 1), (4.0, n + 2), (2.0, n)]
    artifact = compile_artifact(fuse_models([scale_model(f, n=w) for f, w in widths]), "onnxruntime-cpu")
    assert artifact.fusion_map.shared_weights == 1 and artifact.fusion_map.shared_weight_bytes == n * 4
    path = tmp_path / "four.popef"
    write_artifact(path, artifact)
    runner = Runner(path, LENIENT)
    for i, (factor, width) in enumerate(widths):
        x = np.ones((1, width), np.float32)
        np.testing.assert_allclose(runner.execute({f"graph{i}/X": x})[f"graph{i}/O"], factor + np.arange(width)[None])


def test_the_executable_holds_neither_the_records_nor_unused_opset_imports():
    fused = fuse_models([scale_model(2.0), scale_model(3.0)])
    compiled = onnx.load_from_string(bytes(compile_artifact(fused, "onnxruntime-cpu").executable))
    # The artifact's metadata blobs hold the records; onnxruntime imports nine domains, these nodes use one.
    assert not compiled.metadata_props
    assert [o.domain for o in compiled.opset_import] == [""]
