"""The compile pass: the backend optimises each leaf of the dispatch tree as a model of its own."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from popfuse.fusion import FusionError, fuse_models
from popfuse.fusion.dispatch import packed_graph
from popfuse.fusion.dispatch.tree import leaf_graphs
from popfuse.fusion.graph import walk_nodes
from popfuse.fusion.passes.backend_compile import backend_compile
from popfuse.runtime import Runner, RuntimeConfig
from popfuse.runtime.backends.onnxruntime import OnnxRuntimeBackend
from popfuse.runtime.errors import BackendError
from tests.models import (
    if_model,
    local_function_model,
    ppocr_input,
    ppocr_path,
    scale_model,
    unknown_op_model,
)


class CountingBackend(OnnxRuntimeBackend):
    """The onnxruntime backend, keeping each model it was given to compile."""

    def __init__(self) -> None:
        self.given: list[onnx.ModelProto] = []

    def compile(self, model: bytes, device: str) -> bytes:
        self.given.append(onnx.load_from_string(model))
        return super().compile(model, device)


def packed(models: list[onnx.ModelProto]) -> onnx.ModelProto:
    fused = fuse_models(models)
    return fused.wrap(packed_graph(fused.graphs), check=False)


def test_each_leaf_is_compiled_alone_reading_only_the_slots_and_the_index():
    # The whole graph at once: onnxruntime's basic level took 0.08 s for 16 classifiers and 1.5 s for 64.
    model = packed([onnx.load(ppocr_path("cls")), scale_model(), if_model()])
    backend = CountingBackend()
    compiled = backend_compile(model, backend, "cpu").model
    assert len(backend.given) == 3
    for given in backend.given:
        assert {i.name for i in given.graph.input} <= {"slot_in/F32/0", "dispatch/index_int64"}
        assert not [n for n in given.graph.node if n.name.startswith("dispatch/root")]
    leaves = leaf_graphs(compiled.graph)
    assert len(leaves) == 3 and sum(len(leaf.node) for leaf in leaves) < sum(len(g.graph.node) for g in backend.given)
    assert "com.microsoft" in {o.domain for o in compiled.opset_import}  # the classifier's FusedConv
    ort.InferenceSession(compiled.SerializeToString(), providers=["CPUExecutionProvider"])  # loads as it is


def test_a_real_model_compiled_in_its_leaf_answers_as_its_source(make_artifact):
    path = make_artifact([scale_model(), onnx.load(ppocr_path("cls")), if_model()])
    x = ppocr_input("cls")
    got = Runner(path, RuntimeConfig(validate_io_params=False)).execute({"graph1/x": x})
    (want,) = ort.InferenceSession(str(ppocr_path("cls")), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    np.testing.assert_allclose(next(iter(got.values())), want, rtol=1e-5, atol=1e-6)


def test_a_leaf_reading_another_value_of_the_main_graph_is_refused_with_its_name():
    model = packed([scale_model(1.0), scale_model(2.0)])
    leaf = leaf_graphs(model.graph)[0]
    node = next(n for n in walk_nodes(leaf.node) if n.input)
    node.input[0] = "dispatch/elsewhere"
    with pytest.raises(FusionError, match=r"'root.then' of the dispatch tree reads 'dispatch/elsewhere'"):
        backend_compile(model, OnnxRuntimeBackend(), "cpu")


def test_one_leaf_written_in_the_main_graph_is_compiled_whole():
    model = packed([scale_model()])
    backend = CountingBackend()
    backend_compile(model, backend, "cpu")
    assert len(backend.given) == 1 and backend.given[0].graph.input[0].name == "index"


def test_the_models_local_functions_go_with_their_leaves(make_artifact):
    # Each leaf was compiled without the fused model's functions: onnxruntime refused the call to them.
    path = make_artifact([local_function_model(), scale_model(3.0), local_function_model()])
    runner = Runner(path, RuntimeConfig(validate_io_params=False))
    x = np.array([[1.0, 2.0, 3.0, 4.0]], np.float32)
    for index in (0, 2):
        np.testing.assert_array_equal(runner.execute({f"graph{index}/X": x})[f"graph{index}/O"], 2 * x)


def test_a_leaf_the_backend_cannot_compile_is_named_with_its_subgraphs():
    model = packed([scale_model(1.0), unknown_op_model(), scale_model(2.0)])
    with pytest.raises(BackendError, match=r"Frobnicate.*\(in the dispatch leaf '[^']+', subgraphs \[1\]\)"):
        backend_compile(model, OnnxRuntimeBackend(), "cpu")
