"""What PP-OCR's outputs mean: rendered text to read, and the pipeline's own post-processing of each model.

The detector's boxes come from rapidocr's DB post-processing (threshold, contours,
boxes), the recogniser's text from its CTC decoder with the character dictionary
the model carries, the classifier's answer from the class with the highest
probability: the code and settings rapidocr-onnxruntime runs PP-OCR with.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .models import ppocr_path

# rapidocr's settings for PP-OCRv4 detection (its config.yaml).
DET_THRESHOLD = 0.3
_DB_SETTINGS = {"thresh": DET_THRESHOLD, "box_thresh": 0.5, "max_candidates": 1000, "unclip_ratio": 1.6,
                "use_dilation": True, "score_mode": "fast"}
PAGE_LINES = ("Model fusion on ONNX Runtime", "popfuse 2026: one artifact", "The quick brown fox jumps",
              "fp16 keeps the answer 0.55x")
REC_TEXT = "popfuse 2026 fp16"
CLS_TEXT = "popfuse 2026"


def render(lines: Sequence[str], height: int, width: int, size: int, margin: int = 8) -> np.ndarray:
    """``lines`` of black text on white, drawn with Pillow's scalable default font (RGB, uint8)."""
    from PIL import Image, ImageDraw, ImageFont

    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=size)
    step = (height - 2 * margin) / max(len(lines), 1)
    for k, line in enumerate(lines):
        draw.text((margin, margin + k * step + (step - size) / 2), line, fill="black", font=font)
    return np.asarray(image)


def normalised(image: np.ndarray) -> np.ndarray:
    """An RGB page as PP-OCR takes it: (x / 255 - 0.5) / 0.5, NCHW float32."""
    return ((image.astype(np.float32) / 255.0 - 0.5) / 0.5).transpose(2, 0, 1)[None].astype(np.float32)


def det_page(height: int = 160, width: int = 480, lines: Sequence[str] = PAGE_LINES) -> np.ndarray:
    """The detector's input: a page of rendered text (its sides multiples of 32, as the model needs)."""
    return normalised(render(lines, height, width, size=max(12, int(0.55 * (height - 16) / len(lines)))))


def rec_line(text: str = REC_TEXT, width: int = 320) -> np.ndarray:
    """The recogniser's input: one line of text, 48 pixels high, as rapidocr pads it (1x3x48x``width``)."""
    return normalised(render([text], 48, width, size=30, margin=4))


def cls_line(text: str = CLS_TEXT, flipped: bool = False) -> np.ndarray:
    """The classifier's input: one line of text, 48x192, upright or turned 180 degrees."""
    line = normalised(render([text], 48, 192, size=26, margin=4))
    return np.ascontiguousarray(line[:, :, ::-1, ::-1]) if flipped else line


def det_boxes(probabilities: np.ndarray) -> np.ndarray:
    """The text boxes the detector's probability map (1x1xHxW) holds, as rapidocr finds them: the map
    past 0.3, dilated, its contours, their minimum-area boxes scored and unclipped (N x 4 corners x 2)."""
    from rapidocr_onnxruntime.ch_ppocr_det.utils import DBPostProcess

    height, width = probabilities.shape[-2:]
    boxes, _ = DBPostProcess(**_DB_SETTINGS)(np.asarray(probabilities, np.float32), (height, width))
    return np.asarray(boxes).reshape(-1, 4, 2)


def box_ious(want: np.ndarray, got: np.ndarray) -> list[float]:
    """For each box of ``want``, its intersection over union with the best-matching box of ``got``."""
    from shapely.geometry import Polygon

    candidates = [Polygon(b) for b in got]
    out = []
    for box in want:
        p = Polygon(box)
        out.append(max((p.intersection(q).area / p.union(q).area for q in candidates if p.union(q).area),
                       default=0.0))
    return out


@functools.cache
def _decoder():
    import onnx
    from rapidocr_onnxruntime.ch_ppocr_rec.utils import CTCLabelDecode

    model = onnx.load(ppocr_path("rec"), load_external_data=False)
    characters = next(p.value for p in model.metadata_props if p.key == "character").splitlines()
    return CTCLabelDecode(character=characters)


def rec_text(probabilities: np.ndarray) -> str:
    """The text the recogniser's output (1 x steps x classes) reads, by rapidocr's greedy CTC decoder."""
    ((text, _),) = _decoder()(np.asarray(probabilities, np.float32))
    return text


def cls_class(probabilities: np.ndarray) -> int:
    """The classifier's answer: 0 (upright) or 1 (turned 180 degrees)."""
    return int(np.asarray(probabilities).reshape(-1).argmax())


@dataclass(frozen=True)
class Agreement:
    """How an fp16 output agrees with the fp32 one on the task's own terms.

    Attributes:
        model: det, rec or cls.
        agree: det: share of pixels on the same side of the 0.3 threshold; rec, cls: 1.0 when the text or
            class is identical, else 0.0.
        ious: det: each fp32 box's IoU with its best fp16 match (empty elsewhere).
        boxes: det: boxes found in fp32 and in fp16.
        answer: rec: the decoded fp32 text; cls: the fp32 class; det: the number of fp32 boxes.
        fp16_answer: the same, from the fp16 output.
    """

    model: str
    agree: float
    ious: tuple[float, ...]
    boxes: tuple[int, int]
    answer: object
    fp16_answer: object

    @property
    def met(self) -> bool:
        """The targets: det ≥ 99.5% of pixels and every box IoU ≥ 0.9; rec and cls identical."""
        if self.model == "det":
            return self.agree >= 0.995 and self.boxes[0] == self.boxes[1] and min(self.ious, default=1.0) >= 0.9
        return self.agree == 1.0


def agreement(model: str, fp32: np.ndarray, fp16: np.ndarray) -> Agreement:
    """Judge an fp16 output of PP-OCR model ``model`` against its fp32 output."""
    fp32, fp16 = np.asarray(fp32, np.float32), np.asarray(fp16, np.float32)
    if model == "det":
        want, got = det_boxes(fp32), det_boxes(fp16)
        pixels = float(np.mean((fp32 > DET_THRESHOLD) == (fp16 > DET_THRESHOLD)))
        return Agreement(model, pixels, tuple(box_ious(want, got)), (len(want), len(got)), len(want), len(got))
    answer, fp16_answer = (rec_text(fp32), rec_text(fp16)) if model == "rec" else (cls_class(fp32), cls_class(fp16))
    return Agreement(model, float(answer == fp16_answer), (), (0, 0), answer, fp16_answer)
