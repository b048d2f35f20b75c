"""The checks between an artifact's records, run before anything uses them.

``records`` checks each field on its own (type, bound, allowed values, nesting);
this module checks what the fields say about one another: every anchor a
subgraph lists exists with the right direction and belongs to no other
subgraph, subgraph indices are their positions, the slots have room for every
subgraph, each weight lies inside its tensor blob and its shape fits its size,
and names are unique. After ``check_records`` the runner, ``popfuse dump`` and
the server can index the records without meeting a dangling name.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sized

from . import metadata as md
from .dtypes import numpy_from_popef, popef_types
from .errors import ArtifactError

#: The largest number of elements a shape may declare; far beyond any tensor, it keeps sizes in int64.
MAX_ELEMENTS = 1 << 48


def check_records(meta: md.Metadata, fusion_map: md.FusionMap, tensors: Mapping[str, Sized], label: str) -> None:
    """Check the metadata and the fusion map against each other and against the tensor blobs.

    Raises:
        ArtifactError: naming the file, the record's field and what is wrong with it.
    """
    try:
        _check_anchors(meta, fusion_map)
        _check_subgraphs(meta, fusion_map)
        _check_slots(meta, fusion_map)
        _check_tensor_data(meta, tensors)
        _unique("Metadata.blobs", [(ref.type, ref.name) for ref in meta.blobs])
    except _Invalid as e:
        raise ArtifactError(
            f"{label}: the records disagree: {e}. Hint: the file was damaged or edited; rebuild it with "
            "`popfuse build CONFIG.yaml`"
        ) from None


class _Invalid(Exception):
    def __init__(self, where: str, problem: str):
        super().__init__(f"{where}: {problem}")


def _check_anchors(meta: md.Metadata, fusion_map: md.FusionMap) -> None:
    _unique("Metadata.anchors", [a.name for a in meta.anchors])
    for i, anchor in enumerate(meta.anchors):
        _check_shape(f"Metadata.anchors[{i}].tensorInfo.shape", anchor.tensor_info.shape, dynamic=True)
    index = next((a for a in meta.anchors if a.name == fusion_map.index_anchor), None)
    if index is None:
        raise _Invalid("FusionMap.indexAnchor", f"{fusion_map.index_anchor!r} is not an anchor")
    info = index.tensor_info
    if index.type != md.INPUT or info.data_type != "U32" or info.shape != (1,):
        raise _Invalid(
            "FusionMap.indexAnchor",
            f"{index.name!r} must be an INPUT of U32 [1], it is an {index.type} of {info.data_type} {list(info.shape)}",
        )


def _check_subgraphs(meta: md.Metadata, fusion_map: md.FusionMap) -> None:
    if not fusion_map.subgraphs:
        raise _Invalid("FusionMap.subgraphs", "empty; an artifact holds at least one subgraph")
    _unique("FusionMap.subgraphs[].name", [s.name for s in fusion_map.subgraphs])
    anchors = {a.name: a for a in meta.anchors}
    owner: dict[str, int] = {}
    for i, sub in enumerate(fusion_map.subgraphs):
        where = f"FusionMap.subgraphs[{i}]"
        if sub.index != i:
            raise _Invalid(f"{where}.index", f"is {sub.index}; a subgraph's index is its position, {i}")
        for key, names, kind in (("inputs", sub.inputs, md.INPUT), ("outputs", sub.outputs, md.OUTPUT)):
            for j, name in enumerate(names):
                anchor = anchors.get(name)
                if anchor is None or name == fusion_map.index_anchor:
                    raise _Invalid(f"{where}.{key}[{j}]", f"{name!r} is not an anchor of the subgraphs")
                if anchor.type != kind:
                    raise _Invalid(f"{where}.{key}[{j}]", f"{name!r} is an {anchor.type} anchor, listed as {kind}")
                if name in owner:
                    raise _Invalid(f"{where}.{key}[{j}]", f"{name!r} already belongs to subgraph {owner[name]}")
                owner[name] = i
        own = (*sub.inputs, *sub.outputs)
        if set(sub.local_names) != set(own):
            raise _Invalid(f"{where}.localNames", "must name each anchor of the subgraph, and nothing else")
        _unique(f"{where}.localNames", list(sub.local_names.values()))
    for i, anchor in enumerate(meta.anchors):
        if anchor.name != fusion_map.index_anchor and anchor.name not in owner:
            raise _Invalid(f"Metadata.anchors[{i}]", f"{anchor.name!r} belongs to no subgraph")


def _check_slots(meta: md.Metadata, fusion_map: md.FusionMap) -> None:
    slots = meta.slots
    names = [fusion_map.index_anchor]
    for key, table in (("inputs", slots.inputs), ("outputs", slots.outputs)):
        for data_type, slot_names in table.items():
            if data_type not in popef_types():
                raise _Invalid(f"Metadata.slots.{key}", f"unknown data type {data_type!r}")
            names += slot_names
    _unique("Metadata.slots", names)
    types = {a.name: a.tensor_info.data_type for a in meta.anchors}
    for i, sub in enumerate(fusion_map.subgraphs):
        for key, own, table in (("inputs", sub.inputs, slots.inputs), ("outputs", sub.outputs, slots.outputs)):
            for data_type, count in Counter(types[name] for name in own).items():
                have = len(table.get(data_type, ()))
                if count > have:
                    raise _Invalid(
                        f"Metadata.slots.{key}",
                        f"{have} slot(s) of {data_type}, but subgraph {i} has {count} {key} of that type",
                    )


def _check_tensor_data(meta: md.Metadata, tensors: Mapping[str, Sized]) -> None:
    _unique("Metadata.tensorData[].name", [t.name for t in meta.tensor_data])
    for i, ref in enumerate(meta.tensor_data):
        where = f"Metadata.tensorData[{i}]"
        blob = tensors.get(ref.blob)
        if blob is None:
            raise _Invalid(f"{where}.blob", f"no tensor blob {ref.blob!r} in the file")
        shape = ref.tensor_info.shape
        _check_shape(f"{where}.tensorInfo.shape", shape, dynamic=False)
        expected = math.prod(shape) * numpy_from_popef(ref.tensor_info.data_type).itemsize
        if expected != ref.size:
            raise _Invalid(
                f"{where}.size",
                f"is {ref.size}, but {ref.tensor_info.data_type} {list(shape)} takes {expected} bytes",
            )
        if ref.offset + ref.size > len(blob):
            raise _Invalid(
                f"{where}.offset",
                f"{ref.size} bytes at {ref.offset} reach past the end of tensor blob {ref.blob!r} ({len(blob)} bytes)",
            )


def _check_shape(where: str, shape: tuple[int, ...], dynamic: bool) -> None:
    if not dynamic and any(d < 0 for d in shape):
        raise _Invalid(where, f"{list(shape)} has a negative dimension; a weight's shape is fixed")
    if math.prod(max(d, 1) for d in shape) > MAX_ELEMENTS:
        raise _Invalid(where, f"{list(shape)} holds over {MAX_ELEMENTS} elements")


def _unique(where: str, values: list) -> None:
    repeated = [v for v, n in Counter(values).items() if n > 1]
    if repeated:
        raise _Invalid(where, f"{repeated[0]!r} is listed more than once")
