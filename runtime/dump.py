"""What ``popfuse dump`` shows: an artifact's blobs, metadata, anchors and opaques.

Modelled on Poplar's ``popef_dump``: the Anchors section lists every input and
output (``index`` included), the Opaques section the fusion map.
"""

from __future__ import annotations

import base64
import os
from typing import Any

from . import metadata as md
from .artifact import FUSION_MAP_BLOB, parse_blobs
from .display import human_size, show_shape, source_label, table
from .popef import FORMAT_VERSION, BlobType, read_blobs
from .signing import SCHEME


def describe(source: str | os.PathLike) -> dict[str, Any]:
    """A JSON-ready description of the artifact at ``source``."""
    blobs = read_blobs(source)
    artifact = parse_blobs(blobs, source_label(source))
    owner = artifact.fusion_map.anchors()
    anchors = [{**md.to_json(a), "subgraph": owner.get(a.name)} for a in artifact.metadata.anchors]
    fusion_map = {**md.to_json(artifact.fusion_map), "anchors": owner}
    signature = artifact.signature
    return {
        "file": source_label(source),
        "formatVersion": FORMAT_VERSION,
        "size": os.stat(source).st_size,
        "payloadBytes": sum(len(b.payload) for b in blobs),
        "blobs": [
            {"type": _type_name(b.type), "name": b.name, "size": len(b.payload)} for b in blobs
        ],
        "metadata": {k: v for k, v in md.to_json(artifact.metadata).items() if k not in ("anchors", "blobs")},
        "anchors": anchors,
        "opaques": {FUSION_MAP_BLOB: fusion_map, **{k: len(v) for k, v in artifact.opaques.items()}},
        "signature": None if signature is None else {
            "scheme": SCHEME,
            "signer": signature.fingerprint,
            "publicKey": base64.b64encode(signature.public_key).decode(),
            "verified": signature.verified,
        },
    }


def render(info: dict[str, Any]) -> str:
    """``describe``'s result as text, section by section."""
    lines = [f"PopEF-structured artifact {info['file']} (format version {info['formatVersion']}, "
             f"{human_size(info['size'])})", "", f"Signature: {_signature_line(info['signature'])}", "", "Blobs:"]
    lines += table(("", "type", "name", "size"),
                   [(f"[{i}]", b["type"], b["name"], human_size(b["size"])) for i, b in enumerate(info["blobs"])])
    meta = info["metadata"]
    backend = meta["backend"]
    lines += [
        "",
        "Metadata:",
        f"  executable: {meta['executable']}",
        f"  target: {meta['target']} ({backend['name']} {backend['version']}, device {backend['device']})",
        f"  ipuVersion: {meta['ipuVersion']}",
        f"  isInference: {meta['isInference']}",
        f"  replicationFactor: {meta['replicationFactor']}",
        "  programFlow: " + ", ".join(f"{k}={v}" for k, v in meta["programFlow"].items()),
        f"  tensorData: {len(meta['tensorData'])} weights, "
        f"{human_size(sum(t['size'] for t in meta['tensorData']))}, used in place from their blobs",
        "",
        "Anchors:",
    ]
    lines += table(
        ("name", "type", "dataType", "shape", "programs", "subgraph"),
        [(a["name"], a["type"], a["tensorInfo"]["dataType"], show_shape(a["tensorInfo"]["shape"]), a["programs"],
          "-" if a["subgraph"] is None else a["subgraph"]) for a in info["anchors"]],
    )
    fusion_map = info["opaques"][FUSION_MAP_BLOB]
    lines += ["", "Opaques:", f"  {FUSION_MAP_BLOB}:", f"    indexAnchor: {fusion_map['indexAnchor']}",
              f"    sharedWeights: {fusion_map['sharedWeights']}"]
    for s in fusion_map["subgraphs"]:
        lines += [
            f"    subgraph {s['index']}: {s['name']}",
            f"      source: {s['source']} (sha256 {s['sha256'][:16]}…)",
            f"      precision: {s['precision']}, source opset: {s['opset']}",
            f"      inputs: {', '.join(s['inputs'])}",
            f"      outputs: {', '.join(s['outputs'])}",
        ]
    for name, size in info["opaques"].items():
        if name != FUSION_MAP_BLOB:
            lines.append(f"  {name}: {human_size(size)}")
    return "\n".join(lines)


def _signature_line(signature: dict[str, Any] | None) -> str:
    if signature is None:
        return "none (unsigned)"
    verified = {
        True: "the signature matches the file; trust the key with RuntimeConfig(trusted_keys=...)",
        False: "INVALID: the file was changed after it was signed",
        None: "not checked: install popfuse[sign] to check it",
    }[signature["verified"]]
    return f"{signature['scheme']}, signed by key {signature['signer']} ({verified})"


def _type_name(blob_type: int) -> str:
    try:
        return BlobType(blob_type).name.lower()
    except ValueError:
        return f"unknown({blob_type})"

