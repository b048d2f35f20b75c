"""Real models: PP-OCRv4 det and rec and the PP-OCR classifier, fused and checked against onnxruntime."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from popfuse import fusion
from popfuse.cli import main as cli_main
from popfuse.runtime import Runner, RuntimeConfig
from popfuse.runtime.dump import describe
from tests.concurrency import run_in_threads
from tests.models import PPOCR, ppocr_input, ppocr_path

LENIENT = RuntimeConfig(validate_io_params=False)


@pytest.fixture
def ppocr(ppocr_build):
    return ppocr_build


@pytest.fixture(scope="module")
def references():
    """Plain onnxruntime sessions of the source models."""
    return {n: ort.InferenceSession(str(ppocr_path(n)), providers=["CPUExecutionProvider"]) for n in PPOCR}


def test_every_subgraph_equals_the_unfused_model(ppocr, references):
    runner = Runner(ppocr.popef_path, LENIENT)
    for i, name in enumerate(PPOCR):
        x = ppocr_input(name, seed=1)
        (got,) = runner.execute({f"graph{i}/x": x}).values()
        (want,) = references[name].run(None, {"x": x})
        assert got.shape == want.shape
        assert want.max() > 0.5  # a real answer (text found), not an all-zero map
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


def test_public_names_keep_slashes_of_the_original_outputs(ppocr):
    runner = Runner(ppocr.popef_path, LENIENT)
    assert runner.subgraphs[2].outputs == ("graph2/save_infer_model/scale_0.tmp_1",)
    assert [s.inputs for s in runner.subgraphs] == [("graph0/x",), ("graph1/x",), ("graph2/x",)]


def test_concurrent_requests_across_real_subgraphs(ppocr, references):
    runner = Runner(ppocr.popef_path, LENIENT)
    cases = []
    for i, name in enumerate(PPOCR):
        x = ppocr_input(name, seed=2)
        cases.append((i, x, references[name].run(None, {"x": x})[0]))
    def work(offset):
        for k in range(6):
            i, x, want = cases[(offset + k) % 3]
            (got,) = runner.execute({f"graph{i}/x": x}).values()
            np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)

    run_in_threads(work, 4)


def test_dump_shows_index_anchor_and_fusion_map(ppocr, capsys):
    assert cli_main(["dump", str(ppocr.popef_path)]) == 0
    text = capsys.readouterr().out
    assert "Anchors:" in text and "Opaques:" in text
    assert "index" in text.split("Anchors:")[1].split("\n")[2]
    assert "subgraph 1: rec" in text and "ch_PP-OCRv4_rec_infer.onnx" in text
    info = describe(ppocr.popef_path)
    assert info["anchors"][0]["name"] == "index"
    assert info["opaques"]["fusion_map"]["anchors"]["graph2/x"] == 2
    assert info["metadata"]["ipuVersion"] == "ipu21"


def test_fp16_real_models_stay_within_tolerance(tmp_path, references):
    config = {
        "output_dir": str(tmp_path),
        "precision": "fp16",
        "model_fusion": [{"input_model": str(ppocr_path(n)), "name": n} for n in ("rec", "cls")],
    }
    runner = Runner(fusion.build(config).popef_path, LENIENT)
    for i, name in enumerate(("rec", "cls")):
        x = ppocr_input(name, seed=4)
        (got,) = runner.execute({f"graph{i}/x": x.astype(np.float16)}).values()
        assert got.dtype == np.float16
        np.testing.assert_allclose(got.astype(np.float32), references[name].run(None, {"x": x})[0], atol=1e-2)
