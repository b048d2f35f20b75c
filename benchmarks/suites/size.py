"""Artifact size against the sum of the source models.

Target: at most the sum of the sources minus the deduplicated weights.
The artifact splits into content (the compressed executable and the weights)
and records (metadata, fusion map, blob headers), reported apart.
"""

from __future__ import annotations

from popfuse.runtime.popef import BlobType, read_blobs

from ..context import Context
from ..models import backbone_with_head, ppocr
from ..setups import build_fused


def run(ctx: Context) -> dict:
    folder = ctx.workdir / "size"
    folder.mkdir(parents=True, exist_ok=True)
    cases = {
        "ppocr (det, rec, cls)": [ppocr(n) for n in (("cls",) if ctx.smoke else ("det", "rec", "cls"))],
        "same model twice (cls, cls)": [ppocr("cls", 0), ppocr("cls", 1)],
        "two heads on one backbone": [backbone_with_head(folder, 1), backbone_with_head(folder, 2)],
    }
    rows = []
    for label, workloads in cases.items():
        built = build_fused(workloads, folder / f"case{len(rows)}")
        budget = built.source_bytes - built.fusion_map.shared_weight_bytes
        content = sum(len(b.payload) for b in read_blobs(built.popef_path)
                      if b.type in (BlobType.EXECUTABLE, BlobType.TENSOR))
        rows.append(
            {
                "case": label,
                "sources_bytes": built.source_bytes,
                "deduplicated_bytes": built.fusion_map.shared_weight_bytes,
                "artifact_bytes": built.artifact_bytes,
                "content_bytes": content,
                "records_bytes": built.artifact_bytes - content,
                "budget_bytes": budget,
                "artifact_over_budget": built.artifact_bytes / budget,
            }
        )
    return {"rows": rows}
