"""Real models: PP-OCRv4 det and rec and the PP-OCR classifier, fused and checked against onnxruntime."""

from __future__ import annotations

import re

import numpy as np
import onnxruntime as ort
import pytest

from popfuse.benchmarks import ocr
from popfuse.cli import main as cli_main
from popfuse.runtime import Runner, RuntimeConfig
from popfuse.runtime.artifact import read_artifact
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


def test_fp16_keeps_every_models_answer_on_rendered_text(ppocr_fp16_build, references):
    built, _ = ppocr_fp16_build
    runner = Runner(built.popef_path, LENIENT)
    requests = {"det": [ocr.det_page(160, 480), ocr.det_page(96, 320, lines=("fp16 text", "second line 7"))],
                "rec": [ocr.rec_line(), ocr.rec_line("The quick brown fox")],
                "cls": [ocr.cls_line(), ocr.cls_line(flipped=True)]}
    for i, name in enumerate(PPOCR):
        for x in requests[name]:
            (got,) = runner.execute({f"graph{i}/x": x.astype(np.float16)}).values()  # PopRT's float16 I/O
            assert got.dtype == np.float16
            judged = ocr.agreement(name, references[name].run(None, {"x": x})[0], got)
            assert judged.met, judged
    assert ocr.rec_text(references["rec"].run(None, {"x": requests["rec"][0]})[0]) == ocr.REC_TEXT  # it reads


def test_fp16_build_reports_each_model_and_halves_the_weights(ppocr_fp16_build, ppocr_build):
    built, lines = ppocr_fp16_build
    reports = [line.strip() for line in lines if line.strip().startswith("fp16:")]
    assert len(reports) == 3
    # The detector's batch norm reads a variance past float16's range; its range rule keeps the head's sums.
    assert re.match(r"fp16: \d+ of 330 nodes kept float32 \(1 weights, \d+ range, \d op\)", reports[0])
    assert "from det.npz inputs" in reports[0]
    assert all("from generated inputs" in r for r in reports[1:])
    fp16, fp32 = (len(read_artifact(b.popef_path).tensors["weights"]) for b in (built, ppocr_build))
    assert fp16 <= 0.55 * fp32
