"""fp16 against fp32 on PP-OCR, judged by each model's own answer on rendered text.

The three models are fused twice, as the YAML builds them: in fp32, and in fp16
with float16 inputs and outputs and generated calibration (no user inputs). Each
request is rendered text (``benchmarks.ocr``). Targets: det at least 99.5% of
pixels on the same side of the 0.3 threshold and every box of rapidocr's DB
post-processing matched with IoU at least 0.9; rec the same decoded text; cls the
same class; the fp16 weights at most 0.55x the fp32 ones. Latency fp16 against
fp32 on the CPU is reported, not judged. A plain conversion (onnxconverter-common,
every node converted) is judged beside it, to show what measuring changes.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import onnx

from popfuse.fusion import ModelOptions, compile_artifact, fuse_models
from popfuse.fusion.graph import IR_VERSION, initializer_bytes
from popfuse.fusion.naming import anchor
from popfuse.runtime.artifact import write_artifact

from .. import ocr
from ..context import Context
from ..models import ppocr_path
from ..setups import runner, session
from ..timing import paired_blocks


def requests(smoke: bool) -> dict[str, list[np.ndarray]]:
    """The rendered requests for each model."""
    if smoke:
        return {"cls": [ocr.cls_line(), ocr.cls_line(flipped=True)]}
    return {
        "det": [ocr.det_page(320, 640), ocr.det_page(640, 960, lines=ocr.PAGE_LINES * 3)],
        "rec": [ocr.rec_line(), ocr.rec_line("The quick brown fox"), ocr.rec_line("Model fusion 0.55x")],
        "cls": [ocr.cls_line(), ocr.cls_line(flipped=True)],
    }


def run(ctx: Context) -> dict:
    folder = ctx.workdir / "precision"
    folder.mkdir(parents=True, exist_ok=True)
    inputs = requests(ctx.smoke)
    names = list(inputs)
    sources = [onnx.load(ppocr_path(n)) for n in names]
    built = {}
    for precision in ("fp32", "fp16"):
        lines: list[str] = []
        fused = fuse_models(sources, [ModelOptions(name=n, precision=precision) for n in names], progress=lines.append)
        artifact = compile_artifact(fused, "onnxruntime-cpu")
        path = folder / f"{precision}.popef"
        write_artifact(path, artifact)
        built[precision] = {
            "runner": runner(path, ctx.threads),
            "weights": [initializer_bytes([p.model.graph]) for p in fused.models],
            "blob": len(artifact.tensors.get("weights", b"")),
            "reports": [p.results["precision"].details for p in fused.models],
        }
    rows = []
    for i, name in enumerate(names):
        fp32, fp16 = built["fp32"]["runner"], built["fp16"]["runner"]
        plain = session(_plain_fp16(sources[i]), ctx.threads)
        judged, plain_judged = [], []
        feed = anchor(i, "x")
        for x in inputs[name]:
            (want,) = fp32.execute({feed: x}).values()
            (got,) = fp16.execute({feed: x.astype(np.float16)}).values()
            judged.append(ocr.agreement(name, want, got))
            plain_judged.append(ocr.agreement(name, want, plain.run(None, {"x": x.astype(np.float16)})[0]))
        x32, x16 = {feed: inputs[name][0]}, {feed: inputs[name][0].astype(np.float16)}
        ratios, t32, t16 = paired_blocks(partial(fp32.execute, x32), partial(fp16.execute, x16),
                                         blocks=ctx.scale(12, 2), per_block=ctx.scale(3, 1), warmup=2)
        report = built["fp16"]["reports"][i]
        rows.append({
            "model": name,
            "requests": [_request(a) for a in judged],
            "plain_requests": [_request(a) for a in plain_judged],
            "met": all(a.met for a in judged),
            "plain_met": all(a.met for a in plain_judged),
            "kept_fp32": len(report.kept),
            "nodes": report.nodes,
            "kept_reasons": sorted(set(report.kept.values())),
            "error": report.error,
            "max_error": report.max_error,
            "fp32_weight_bytes": built["fp32"]["weights"][i],
            "fp16_weight_bytes": built["fp16"]["weights"][i],
            "weights_ratio": built["fp16"]["weights"][i] / built["fp32"]["weights"][i],
            "fp32_p50_ms": float(np.percentile(t32, 50)) * 1e3,
            "fp16_p50_ms": float(np.percentile(t16, 50)) * 1e3,
            "latency_ratio": float(np.median(ratios)),
            "shapes": [list(x.shape) for x in inputs[name]],
        })
    return {
        "rows": rows,
        "weights_blob_ratio": built["fp16"]["blob"] / built["fp32"]["blob"],
        "fp32_weights_blob": built["fp32"]["blob"],
        "fp16_weights_blob": built["fp16"]["blob"],
    }


def _request(a: ocr.Agreement) -> dict:
    return {"agree": a.agree, "min_iou": min(a.ious, default=None), "boxes": list(a.boxes),
            "answer": a.answer, "fp16_answer": a.fp16_answer}


def _plain_fp16(model: onnx.ModelProto) -> bytes:
    """The model converted as onnxconverter-common converts it alone: every node, weights clamped to float16."""
    import warnings

    from onnxconverter_common import float16

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        converted = float16.convert_float_to_float16(model, min_positive_val=5.96e-08, max_finite_val=65504.0)
    converted.ir_version = IR_VERSION
    return converted.SerializeToString()
