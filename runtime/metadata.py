"""The artifact's metadata and fusion map, as typed records (``records``) with a canonical JSON form.

Metadata uses PopEF's names (``anchors``, ``tensorInfo``, ``programFlow`` …).
The fusion map is popfuse's own: it says which subgraph each anchor belongs to,
the model's own name for it, and where each subgraph came from. Both are pure
data: no onnx, no onnxruntime.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from . import records
from .dtypes import popef_types
from .errors import ArtifactError

INPUT = "INPUT"
OUTPUT = "OUTPUT"

_NON_NEGATIVE = {"min": 0}


@dataclass(frozen=True)
class TensorInfo:
    """Shape and PopEF data type of an anchor; -1 marks a dimension set at run time."""

    shape: tuple[int, ...] = field(metadata={"min": -1})
    data_type: str = field(metadata={"choices": popef_types()})


@dataclass(frozen=True)
class Anchor:
    """A tensor that crosses the executable's boundary, as PopEF names it."""

    name: str
    tensor_info: TensorInfo
    type: str = field(metadata={"choices": (INPUT, OUTPUT)})
    programs: tuple[int, ...] = (0,)


@dataclass(frozen=True)
class BackendInfo:
    """The backend an executable was compiled for, the version that compiled it, and the
    machine features (device, architecture …) the compiled code depends on."""

    name: str
    version: str
    device: str
    features: str = ""


@dataclass(frozen=True)
class BlobRef:
    """A blob that the metadata says must follow it in the file."""

    type: int
    name: str
    size: int = field(metadata=_NON_NEGATIVE)


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
    offset: int = field(metadata=_NON_NEGATIVE)
    size: int = field(metadata=_NON_NEGATIVE)


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
    program_flow: dict[str, tuple[int, ...]] = field(default_factory=lambda: {"load": (), "main": (0,), "save": ()})
    blobs: tuple[BlobRef, ...] = ()
    tensor_data: tuple[TensorData, ...] = ()


@dataclass(frozen=True)
class Subgraph:
    """One fused model: its branch index, name, provenance and public anchors.

    ``local_names`` gives, for each of its anchors, the model's own name of the tensor.
    """

    index: int = field(metadata=_NON_NEGATIVE)
    name: str
    source: str
    sha256: str
    precision: str
    opset: int
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    local_names: dict[str, str]

    def local_name(self, anchor: str) -> str:
        """The model's own name of one of its anchors."""
        return self.local_names[anchor]

    def anchor(self, local_name: str) -> str | None:
        """The anchor of the model's tensor ``local_name``, or None when the model has none of that name."""
        return next((a for a, own in self.local_names.items() if own == local_name), None)


@dataclass(frozen=True)
class FusionMap:
    """Which subgraph each anchor belongs to, and what each subgraph is."""

    subgraphs: tuple[Subgraph, ...]
    index_anchor: str
    shared_weights: int = 0
    shared_weight_bytes: int = 0

    def anchors(self) -> dict[str, int]:
        """Anchor name → subgraph index, for every anchor but the index."""
        return {name: s.index for s in self.subgraphs for name in (*s.inputs, *s.outputs)}


def dumps(record: Metadata | FusionMap) -> bytes:
    """Canonical JSON bytes: sorted keys, no whitespace, so builds are byte-identical."""
    return records.dumps(record)


def to_json(record: Metadata | FusionMap) -> dict[str, Any]:
    """A record's JSON form, as ``popfuse dump --json`` shows it."""
    return records.to_json(record)


def loads(kind: type[Metadata] | type[FusionMap], payload: bytes | memoryview, label: str) -> Any:
    """Parse ``payload`` as ``kind``; a malformed record raises ArtifactError naming ``label`` and the field."""
    try:
        return records.loads(kind, payload, kind.__name__)
    except records.RecordError as e:
        raise ArtifactError(
            f"{label}: the {kind.__name__} record is malformed: {e}. Hint: an artifact from another popfuse "
            "version is rebuilt with `popfuse build CONFIG.yaml`"
        ) from e
