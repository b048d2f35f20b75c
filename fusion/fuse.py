"""``fuse``: N ONNX models in, one fused ONNX model out. Pure: no files, no backend.

Each model is prepared by the passes in order (fix input shapes → fold
constants → precision → opset → infer shapes → namespace), then the dispatch
tree is built around them. Each model's weights stay in its own branch here;
the compiler shares identical ones after the backend has optimised the graph.
The fused model carries its anchors and fusion map in ``metadata_props``, so
the compiler can write the artifact from the ModelProto alone.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import onnx

from runtime import metadata as md
from runtime.dtypes import popef_from_onnx
from runtime.dump import human_size

from .config import ModelOptions
from .errors import FusionError
from .passes import run_pass
from .passes.constants import fold_constants
from .passes.dispatch import INDEX, build_dispatch
from .passes.namespace import add_namespace, prefix_for
from .passes.opset import DEFAULT_DOMAINS, convert_opset, default_opset, target_opset
from .passes.precision import convert_precision
from .passes.shapes import drop_negative_dims, fix_input_shapes, infer_shapes
from .passes.weights import tensor_nbytes

# onnxruntime 1.31 reads IR versions up to 11; onnx 1.23 would write 14 by default.
IR_VERSION = 10
ANCHORS_PROP = "popfuse.anchors"
FUSION_MAP_PROP = "popfuse.fusion_map"

Progress = Callable[[str], None]


@dataclass(frozen=True)
class PreparedModel:
    """One model after its passes: namespaced, harmonised, ready for the dispatch tree."""

    index: int
    name: str
    model: onnx.ModelProto
    subgraph: md.Subgraph
    anchors: tuple[md.Anchor, ...]
    seconds: float


def prepare_model(model: onnx.ModelProto, options: ModelOptions, index: int, opset: int) -> PreparedModel:
    """Run the per-model passes on ``model``, which becomes subgraph ``index``."""
    start = time.perf_counter()
    name = options.name or f"model{index}"
    _check_model(model, name)
    digest = hashlib.sha256(model.SerializeToString(deterministic=True)).hexdigest()
    original_opset = default_opset(model)
    steps = (
        ("negative_dims", drop_negative_dims),
        ("input_shape", lambda m: fix_input_shapes(m, options.input_shape)),
        ("fold_constants", lambda m: fold_constants(m, options.max_tensor_size)),
        ("precision", lambda m: convert_precision(m, options.precision)),
        ("opset", lambda m: convert_opset(m, opset)),
        ("infer_shapes", infer_shapes),
        ("namespace", lambda m: add_namespace(m, prefix_for(index))),
    )
    for step, fn in steps:
        model = run_pass(step, name, fn, model)
    anchors = tuple(_anchor(i, md.INPUT, name) for i in _graph_inputs(model.graph)) + tuple(
        _anchor(o, md.OUTPUT, name) for o in model.graph.output
    )
    subgraph = md.Subgraph(
        index=index,
        name=name,
        source=options.source or "<memory>",
        sha256=digest,
        precision=options.precision,
        opset=original_opset,
        inputs=tuple(a.name for a in anchors if a.type == md.INPUT),
        outputs=tuple(a.name for a in anchors if a.type == md.OUTPUT),
    )
    return PreparedModel(index, name, model, subgraph, anchors, time.perf_counter() - start)


def fuse(
    models: Sequence[onnx.ModelProto],
    options: Sequence[ModelOptions] | None = None,
    progress: Progress | None = None,
) -> onnx.ModelProto:
    """Fuse ``models`` into one graph whose ``index`` input selects the model to run.

    Args:
        models: The source models; model i becomes subgraph i. They are not modified.
        options: One ModelOptions per model; None means defaults for all.
        progress: Called with one line per prepared model.

    Returns:
        The fused model, checked by ``onnx.checker``, with IR version ``IR_VERSION``.

    Raises:
        FusionError: naming the model and the problem.
    """
    if not models:
        raise FusionError("no models to fuse")
    options = list(options) if options is not None else [ModelOptions() for _ in models]
    if len(options) != len(models):
        raise FusionError(f"{len(models)} models but {len(options)} ModelOptions; give one per model")
    names = [o.name or f"model{i}" for i, o in enumerate(options)]
    if len(set(names)) != len(names):
        raise FusionError(f"model names must be unique, received {names}")
    for name, model in zip(names, models):
        if not isinstance(model, onnx.ModelProto):
            raise FusionError(f"model {name!r}: expected an onnx.ModelProto, received {type(model).__name__}")
    opset = target_opset(models)
    prepared = []
    for i, (model, opts) in enumerate(zip(models, options)):
        p = prepare_model(model, opts, i, opset)
        prepared.append(p)
        if progress:
            progress(
                f"[{i + 1}/{len(models)}] {p.name}: opset {p.subgraph.opset}->{opset}, {p.subgraph.precision}, "
                f"{len(p.model.graph.node)} nodes, {human_size(_weights_bytes(p.model))} weights "
                f"({p.seconds:.2f} s)"
            )
    return assemble(prepared, opset)


def assemble(prepared: Sequence[PreparedModel], opset: int) -> onnx.ModelProto:
    """Build the dispatch tree around prepared models."""
    main = build_dispatch([p.model.graph for p in prepared])
    fused = onnx.helper.make_model(
        main,
        opset_imports=_merge_opsets(prepared, opset),
        producer_name="popfuse",
        ir_version=IR_VERSION,
    )
    fused.functions.extend(_merge_functions(prepared))
    index_anchor = md.Anchor(INDEX, md.TensorInfo((1,), "U32"), md.INPUT)
    anchors = (index_anchor, *(a for p in prepared for a in p.anchors))
    fusion_map = md.FusionMap(subgraphs=tuple(p.subgraph for p in prepared))
    onnx.helper.set_model_props(
        fused,
        {
            ANCHORS_PROP: md.dumps_anchors(anchors).decode(),
            FUSION_MAP_PROP: md.dumps(fusion_map).decode(),
        },
    )
    try:
        onnx.checker.check_model(fused)
    except onnx.checker.ValidationError as e:
        raise FusionError(f"the fused graph is not valid ONNX: {e}") from e
    return fused


def fusion_records(fused: onnx.ModelProto) -> tuple[tuple[md.Anchor, ...], md.FusionMap]:
    """The anchors and fusion map that ``fuse`` stored in a fused model."""
    props = {p.key: p.value for p in fused.metadata_props}
    if ANCHORS_PROP not in props or FUSION_MAP_PROP not in props:
        raise FusionError("this model was not produced by popfuse's fuse(): it has no fusion map")
    anchors = md.loads_anchors(props[ANCHORS_PROP].encode(), "fused model")
    return anchors, md.loads(md.FusionMap, props[FUSION_MAP_PROP].encode(), "fused model")


def _check_model(model: onnx.ModelProto, name: str) -> None:
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as e:
        raise FusionError(f"model {name!r} is not a valid ONNX model: {e}") from e
    initializers = {t.name for t in model.graph.initializer}
    inputs = {i.name for i in model.graph.input if i.name not in initializers}
    seen: set[str] = set()
    for out in model.graph.output:
        if out.name in inputs or out.name in seen:
            what = "also an input" if out.name in inputs else "listed twice"
            raise FusionError(
                f"model {name!r}: output {out.name!r} is {what}; anchors need distinct names. "
                "Hint: add an Identity node that renames the output"
            )
        seen.add(out.name)


def _graph_inputs(graph: onnx.GraphProto) -> list[onnx.ValueInfoProto]:
    initializers = {t.name for t in graph.initializer}
    return [i for i in graph.input if i.name not in initializers]


def _anchor(info: onnx.ValueInfoProto, kind: str, model_name: str) -> md.Anchor:
    tt = info.type.tensor_type
    data_type = popef_from_onnx(tt.elem_type) if info.type.HasField("tensor_type") else None
    if data_type is None:
        raise FusionError(
            f"model {model_name!r}: {kind.lower()} {info.name!r} has an element type popfuse cannot carry "
            f"({onnx.helper.tensor_dtype_to_string(tt.elem_type) if tt.elem_type else 'not a tensor'})"
        )
    shape = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in tt.shape.dim)
    return md.Anchor(info.name, md.TensorInfo(shape, data_type), kind)


def _weights_bytes(model: onnx.ModelProto) -> int:
    return sum(tensor_nbytes(t) for t in model.graph.initializer)


def _merge_opsets(prepared: Sequence[PreparedModel], opset: int) -> list[onnx.OperatorSetIdProto]:
    versions: dict[str, tuple[int, str]] = {"": (opset, "")}
    for p in prepared:
        for entry in p.model.opset_import:
            if entry.domain in DEFAULT_DOMAINS:
                continue
            seen = versions.get(entry.domain)
            if seen and seen[0] != entry.version:
                raise FusionError(
                    f"models {seen[1]!r} and {p.name!r} import domain {entry.domain!r} at versions "
                    f"{seen[0]} and {entry.version}; only the default domain can be harmonised"
                )
            versions[entry.domain] = (entry.version, p.name)
    return [onnx.helper.make_opsetid(domain, v) for domain, (v, _) in sorted(versions.items())]


def _merge_functions(prepared: Sequence[PreparedModel]) -> list[onnx.FunctionProto]:
    merged: dict[tuple[str, str], tuple[onnx.FunctionProto, str]] = {}
    for p in prepared:
        for fn in p.model.functions:
            key = (fn.domain, fn.name)
            if key in merged and merged[key][0] != fn:
                raise FusionError(
                    f"models {merged[key][1]!r} and {p.name!r} define different functions named "
                    f"{fn.domain}::{fn.name}"
                )
            merged[key] = (fn, p.name)
    return [fn for fn, _ in merged.values()]
