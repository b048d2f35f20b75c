"""The artifact's metadata and fusion map, as typed records with a JSON form.

Metadata uses PopEF's names (``anchors``, ``tensorInfo``, ``programFlow`` …).
The fusion map is popfuse's own: it says which subgraph each anchor belongs to
and where each subgraph came from. Both are pure data: no onnx, no onnxruntime.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from .errors import ArtifactError

INPUT = "INPUT"
OUTPUT = "OUTPUT"
INDEX_ANCHOR = "index"


@dataclass(frozen=True)
class TensorInfo:
    """Shape and PopEF data type of an anchor; -1 marks a dimension set at run time."""

    shape: tuple[int, ...]
    data_type: str

    def to_json(self) -> dict[str, Any]:
        return {"shape": list(self.shape), "dataType": self.data_type}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> TensorInfo:
        return cls(shape=tuple(int(x) for x in d["shape"]), data_type=str(d["dataType"]))


@dataclass(frozen=True)
class Anchor:
    """A tensor that crosses the executable's boundary, as PopEF names it."""

    name: str
    tensor_info: TensorInfo
    type: str
    programs: tuple[int, ...] = (0,)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "tensorInfo": self.tensor_info.to_json(),
            "type": self.type,
            "programs": list(self.programs),
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Anchor:
        if d["type"] not in (INPUT, OUTPUT):
            raise ValueError(f"anchor {d['name']!r} has type {d['type']!r}, expected INPUT or OUTPUT")
        return cls(
            name=str(d["name"]),
            tensor_info=TensorInfo.from_json(d["tensorInfo"]),
            type=d["type"],
            programs=tuple(int(p) for p in d["programs"]),
        )


@dataclass(frozen=True)
class BackendInfo:
    """The backend an executable was compiled for, the version that compiled it, and the
    machine features (CPU instruction sets …) the compiled code depends on."""

    name: str
    version: str
    device: str
    features: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "device": self.device, "features": self.features}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> BackendInfo:
        return cls(
            name=str(d["name"]), version=str(d["version"]), device=str(d["device"]), features=str(d["features"])
        )


@dataclass(frozen=True)
class BlobRef:
    """A blob that the metadata says must follow it in the file."""

    type: int
    name: str
    size: int

    def to_json(self) -> dict[str, Any]:
        return {"type": self.type, "name": self.name, "size": self.size}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> BlobRef:
        return cls(type=int(d["type"]), name=str(d["name"]), size=int(d["size"]))


@dataclass(frozen=True)
class TensorData:
    """A weight the executable names as external data, and where a tensor blob holds it.

    PopEF gives each weight a TensorData blob of its own; popfuse packs them
    into one blob, aligned, and lists them here so the runtime needs no parser
    of the executable to find them.
    """

    name: str
    tensor_info: TensorInfo
    blob: str
    offset: int
    size: int

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "tensorInfo": self.tensor_info.to_json(),
            "blob": self.blob,
            "offset": self.offset,
            "size": self.size,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> TensorData:
        return cls(
            name=str(d["name"]),
            tensor_info=TensorInfo.from_json(d["tensorInfo"]),
            blob=str(d["blob"]),
            offset=int(d["offset"]),
            size=int(d["size"]),
        )


@dataclass(frozen=True)
class SlotLayout:
    """How the executable takes inputs and returns outputs: slots shared by every subgraph.

    Per data type, the names of its input (output) slots in order: a
    subgraph's k-th input of a type, in anchor order, is fed to that type's
    slot k, and its k-th output of a type is returned in that type's slot k.
    The slots declare no rank; the unused input slots are fed empty arrays.
    """

    inputs: dict[str, tuple[str, ...]]
    outputs: dict[str, tuple[str, ...]]

    def to_json(self) -> dict[str, Any]:
        return {"inputs": {t: list(v) for t, v in sorted(self.inputs.items())},
                "outputs": {t: list(v) for t, v in sorted(self.outputs.items())}}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> SlotLayout:
        def names(side: dict[str, Any]) -> dict[str, tuple[str, ...]]:
            return {str(t): tuple(str(n) for n in v) for t, v in side.items()}

        return cls(inputs=names(d["inputs"]), outputs=names(d["outputs"]))


@dataclass(frozen=True)
class Metadata:
    """PopEF-style metadata of one executable."""

    anchors: tuple[Anchor, ...]
    executable: str
    target: str
    backend: BackendInfo
    slots: SlotLayout
    ipu_version: str | None = None
    is_inference: bool = True
    replication_factor: int = 1
    program_flow: dict[str, list[int]] = field(default_factory=lambda: {"load": [], "main": [0], "save": []})
    blobs: tuple[BlobRef, ...] = ()
    tensor_data: tuple[TensorData, ...] = ()
    #: How the executable blob is stored: "zlib" (compressed) or "none".
    executable_encoding: str = "none"

    def to_json(self) -> dict[str, Any]:
        return {
            "anchors": [a.to_json() for a in self.anchors],
            "executable": self.executable,
            "executableEncoding": self.executable_encoding,
            "target": self.target,
            "backend": self.backend.to_json(),
            "slots": self.slots.to_json(),
            "ipuVersion": self.ipu_version,
            "isInference": self.is_inference,
            "replicationFactor": self.replication_factor,
            "programFlow": self.program_flow,
            "blobs": [b.to_json() for b in self.blobs],
            "tensorData": [t.to_json() for t in self.tensor_data],
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Metadata:
        return cls(
            anchors=tuple(Anchor.from_json(a) for a in d["anchors"]),
            executable=str(d["executable"]),
            target=str(d["target"]),
            backend=BackendInfo.from_json(d["backend"]),
            slots=SlotLayout.from_json(d["slots"]),
            ipu_version=d.get("ipuVersion"),
            is_inference=bool(d["isInference"]),
            replication_factor=int(d["replicationFactor"]),
            program_flow={k: [int(p) for p in v] for k, v in d["programFlow"].items()},
            blobs=tuple(BlobRef.from_json(b) for b in d.get("blobs", ())),
            tensor_data=tuple(TensorData.from_json(t) for t in d.get("tensorData", ())),
            executable_encoding=str(d.get("executableEncoding", "none")),
        )


@dataclass(frozen=True)
class Subgraph:
    """One fused model: its branch index, name, provenance and public anchors."""

    index: int
    name: str
    source: str
    sha256: str
    precision: str
    opset: int
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "name": self.name,
            "source": self.source,
            "sha256": self.sha256,
            "precision": self.precision,
            "opset": self.opset,
            "inputs": list(self.inputs),
            "outputs": list(self.outputs),
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Subgraph:
        return cls(
            index=int(d["index"]),
            name=str(d["name"]),
            source=str(d["source"]),
            sha256=str(d["sha256"]),
            precision=str(d["precision"]),
            opset=int(d["opset"]),
            inputs=tuple(d["inputs"]),
            outputs=tuple(d["outputs"]),
        )


@dataclass(frozen=True)
class FusionMap:
    """Which subgraph each anchor belongs to, and what each subgraph is."""

    subgraphs: tuple[Subgraph, ...]
    index_anchor: str = INDEX_ANCHOR
    shared_weights: int = 0
    shared_weight_bytes: int = 0

    def anchors(self) -> dict[str, int]:
        """Anchor name → subgraph index, for every anchor but the index."""
        return {name: s.index for s in self.subgraphs for name in (*s.inputs, *s.outputs)}

    def to_json(self) -> dict[str, Any]:
        return {
            "indexAnchor": self.index_anchor,
            "subgraphs": [s.to_json() for s in self.subgraphs],
            "anchors": self.anchors(),
            "sharedWeights": self.shared_weights,
            "sharedWeightBytes": self.shared_weight_bytes,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> FusionMap:
        return cls(
            subgraphs=tuple(Subgraph.from_json(s) for s in d["subgraphs"]),
            index_anchor=str(d["indexAnchor"]),
            shared_weights=int(d.get("sharedWeights", 0)),
            shared_weight_bytes=int(d.get("sharedWeightBytes", 0)),
        )


def dumps(record: Metadata | FusionMap) -> bytes:
    """Canonical JSON bytes: sorted keys, no whitespace, so builds are byte-identical."""
    return json.dumps(record.to_json(), sort_keys=True, separators=(",", ":")).encode("utf-8")


def dumps_anchors(anchors: tuple[Anchor, ...]) -> bytes:
    """Canonical JSON bytes of an anchor list."""
    return json.dumps([a.to_json() for a in anchors], sort_keys=True, separators=(",", ":")).encode("utf-8")


def loads_anchors(payload: bytes | memoryview, label: str) -> tuple[Anchor, ...]:
    """Parse an anchor list written by ``dumps_anchors``."""
    try:
        return tuple(Anchor.from_json(a) for a in json.loads(bytes(payload)))
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ArtifactError(f"{label}: the anchor list is malformed: {e}") from e


def loads(kind: type[Metadata | FusionMap], payload: bytes | memoryview, label: str):
    """Parse ``payload`` as ``kind``; a malformed record raises ArtifactError naming ``label``."""
    try:
        return kind.from_json(json.loads(bytes(payload)))
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        detail = f"missing key {e}" if isinstance(e, KeyError) else str(e)
        raise ArtifactError(
            f"{label}: the {kind.__name__} record is malformed: {detail}. Hint: an artifact from another popfuse "
            "version is rebuilt with `popfuse build CONFIG.yaml`"
        ) from e
