"""The judge of fp16's targets: rendered text, and PP-OCR's own post-processing of each model's output."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from popfuse.benchmarks import ocr
from tests.models import ppocr_path


@pytest.fixture(scope="module")
def sessions():
    return {n: ort.InferenceSession(str(ppocr_path(n)), providers=["CPUExecutionProvider"])
            for n in ("det", "rec", "cls")}


def test_the_pipeline_reads_the_text_it_renders(sessions):
    page = ocr.det_page(96, 320, lines=("first line", "second line"))
    assert page.shape == (1, 3, 96, 320) and page.dtype == np.float32
    boxes = ocr.det_boxes(sessions["det"].run(None, {"x": page})[0])
    assert boxes.shape == (2, 4, 2)  # one box per line
    assert sorted(boxes[:, :, 1].mean(axis=1) > 48) == [False, True]  # one in each half of the page
    assert ocr.rec_text(sessions["rec"].run(None, {"x": ocr.rec_line()})[0]) == ocr.REC_TEXT
    upright, flipped = (sessions["cls"].run(None, {"x": ocr.cls_line(flipped=f)})[0] for f in (False, True))
    assert (ocr.cls_class(upright), ocr.cls_class(flipped)) == (0, 1)


def test_agreement_meets_only_what_the_targets_allow(sessions):
    probabilities = sessions["det"].run(None, {"x": ocr.det_page(96, 320, lines=("one line",))})[0]
    assert ocr.agreement("det", probabilities, probabilities).met
    # More text pixels, as the fp16 detector found before it measured: text grows by 3 pixels each way.
    swollen = np.max([np.roll(probabilities, (dy, dx), axis=(-2, -1)) for dy in (-3, 0, 3) for dx in (-3, 0, 3)],
                     axis=0)
    judged = ocr.agreement("det", probabilities, swollen)
    assert not judged.met and judged.agree < 0.995
    moved = np.roll(probabilities, 20, axis=-1)  # the same share of text pixels, the box 20 pixels over
    judged = ocr.agreement("det", probabilities, moved)
    assert judged.boxes == (1, 1) and min(judged.ious) < 0.9 and not judged.met
    assert ocr.box_ious(np.zeros((1, 4, 2)), np.zeros((0, 4, 2))) == [0.0]
    text = sessions["rec"].run(None, {"x": ocr.rec_line("popfuse")})[0]
    assert ocr.agreement("rec", text, text).met
    assert not ocr.agreement("rec", text, text[:, ::-1]).met  # the steps reversed: another text
    assert not ocr.agreement("cls", np.array([[0.9, 0.1]]), np.array([[0.4, 0.6]])).met
