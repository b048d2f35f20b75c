"""``fuse``: N ONNX models in, one fused model out. Pure: no files, and no backend but the one fp16
measures with (``passes.precision``).

Each model runs through its passes (``model_passes``), then the dispatch tree
is built around them. ``fuse_models`` returns the typed ``FusedModel`` the
compiler takes: the prepared graphs, the anchors and the fusion map.
``fuse`` returns the same fusion as one ONNX model in the public layout, the
form a user saves, inspects or runs in plain onnxruntime.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import onnx

from popfuse.runtime import metadata as md
from popfuse.runtime.display import human_size
from popfuse.runtime.dtypes import popef_from_onnx

from . import naming
from .calibration import as_calibration
from .config import ModelOptions
from .dispatch import public_graph
from .errors import FusionError
from .graph import IR_VERSION, graph_inputs, initializer_bytes
from .passes.constants import fold_constants
from .passes.namespace import add_namespace
from .passes.opset import DEFAULT_DOMAINS, convert_opset, default_opset, target_opset
from .passes.precision import PrecisionOptions, convert_precision, warn_outside_tolerance
from .passes.shapes import drop_initializer_inputs, drop_negative_dims, fix_input_shapes, infer_shapes
from .pipeline import Pass, PassResult, final_model, run_passes

Progress = Callable[[str], None]


@dataclass(frozen=True)
class PreparedModel:
    """One model after its passes: namespaced, harmonised, ready for the dispatch tree.

    Its graph's inputs and outputs are its anchors, in order.
    """

    index: int
    name: str
    model: onnx.ModelProto
    subgraph: md.Subgraph
    anchors: tuple[md.Anchor, ...]
    results: dict[str, PassResult]
    seconds: float


@dataclass(frozen=True)
class FusedModel:
    """What fusion hands the compiler: the prepared models, the anchors (``index`` first) and the fusion map."""

    models: tuple[PreparedModel, ...]
    opset_imports: tuple[onnx.OperatorSetIdProto, ...]
    functions: tuple[onnx.FunctionProto, ...]
    anchors: tuple[md.Anchor, ...]
    fusion_map: md.FusionMap

    @property
    def graphs(self) -> list[onnx.GraphProto]:
        """Model i's namespaced graph, for each subgraph i."""
        return [p.model.graph for p in self.models]

    def wrap(self, graph: onnx.GraphProto, check: bool = True) -> onnx.ModelProto:
        """``graph`` as a model with the fusion's opset imports and functions, checked by ``onnx.checker``
        unless ``check`` is False (the packed layout's slots declare no shape, which the checker refuses
        of a graph's interface; the backend checks what it compiles)."""
        model = onnx.helper.make_model(
            graph, opset_imports=list(self.opset_imports), producer_name="popfuse", ir_version=IR_VERSION
        )
        model.functions.extend(self.functions)
        if not check:
            return model
        try:
            onnx.checker.check_model(model)
        except onnx.checker.ValidationError as e:
            raise FusionError(f"the fused graph is not valid ONNX: {e}") from e
        return model

    def to_onnx(self) -> onnx.ModelProto:
        """The fusion as one ONNX model in the public layout (``dispatch.public``)."""
        return self.wrap(public_graph(self.graphs))


def model_passes(options: ModelOptions, index: int, opset: int) -> list[Pass]:
    """The passes that prepare one model to become subgraph ``index``, in order.

    Raises:
        ConfigError: ``options.calibration`` is no calibration (naming the model).
    """
    calibration = as_calibration(options.calibration, f"model {options.name or f'model{index}'!r}: calibration")
    return [
        Pass("negative_dims", drop_negative_dims),
        Pass("initializer_inputs", drop_initializer_inputs),
        Pass("input_shape", partial(fix_input_shapes, shapes=options.input_shape)),
        Pass("fold_constants", partial(fold_constants, max_tensor_size=options.max_tensor_size)),
        Pass("precision", partial(convert_precision, precision=options.precision, options=PrecisionOptions(
            calibration=calibration, keep_io_types=options.keep_io_types, strict=options.precision_strict,
        ))),
        Pass("opset", partial(convert_opset, opset=opset)),
        Pass("infer_shapes", infer_shapes),
        Pass("namespace", partial(add_namespace, prefix=naming.namespace(index))),
    ]


def prepare_model(model: onnx.ModelProto, options: ModelOptions, index: int, opset: int) -> PreparedModel:
    """Run the per-model passes on ``model``, which becomes subgraph ``index``."""
    start = time.perf_counter()
    name = options.name or f"model{index}"
    _check_model(model, name)
    digest = hashlib.sha256(model.SerializeToString(deterministic=True)).hexdigest()
    original_opset = default_opset(model)
    results = run_passes(model_passes(options, index, opset), model, f"model {name!r}")
    prepared = final_model(results)
    inputs = tuple(_anchor(i, md.INPUT, name) for i in prepared.graph.input)
    outputs = tuple(_anchor(o, md.OUTPUT, name) for o in prepared.graph.output)
    anchors = inputs + outputs
    subgraph = md.Subgraph(
        index=index,
        name=name,
        source=options.source or "<memory>",
        sha256=digest,
        precision=options.precision,
        opset=original_opset,
        inputs=tuple(a.name for a in inputs),
        outputs=tuple(a.name for a in outputs),
        local_names={a.name: naming.local_name(index, a.name) for a in anchors},
    )
    return PreparedModel(index, name, prepared, subgraph, anchors, results, time.perf_counter() - start)


def fuse_models(
    models: Sequence[onnx.ModelProto],
    options: Sequence[ModelOptions] | None = None,
    progress: Progress | None = None,
) -> FusedModel:
    """Fuse ``models`` into one ``FusedModel``, whose ``index`` input selects the model to run.

    Args:
        models: The source models; model i becomes subgraph i. They are not modified.
        options: One ModelOptions per model; None means defaults for all.
        progress: Called with one line per prepared model, and one more per fp16 model: what it kept in
            float32 and the error measured (a PrecisionWarning also says when that passes the tolerance).

    Raises:
        FusionError: naming the model and the problem (a ``PassError`` names the pass too).
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
                f"{len(p.model.graph.node)} nodes, {human_size(initializer_bytes([p.model.graph]))} weights "
                f"({p.seconds:.2f} s)"
            )
        report = p.results["precision"].details
        if progress and report is not None:
            progress(f"      {report.summary()}")
        warn_outside_tolerance(report, f"model {p.name!r}")
    index_anchor = md.Anchor(naming.INDEX, md.TensorInfo((1,), "U32"), md.INPUT)
    return FusedModel(
        models=tuple(prepared),
        opset_imports=tuple(_merge_opsets(prepared, opset)),
        functions=tuple(_merge_functions(prepared)),
        anchors=(index_anchor, *(a for p in prepared for a in p.anchors)),
        fusion_map=md.FusionMap(subgraphs=tuple(p.subgraph for p in prepared), index_anchor=naming.INDEX),
    )


def fuse(
    models: Sequence[onnx.ModelProto],
    options: Sequence[ModelOptions] | None = None,
    progress: Progress | None = None,
) -> onnx.ModelProto:
    """Fuse ``models`` into one ONNX model whose ``index`` input selects the model to run.

    The pure form of ``fuse_models``: ModelProtos in, a ModelProto out, checked
    by ``onnx.checker``, with IR version ``IR_VERSION``.
    """
    return fuse_models(models, options, progress).to_onnx()


def _check_model(model: onnx.ModelProto, name: str) -> None:
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as e:
        raise FusionError(f"model {name!r} is not a valid ONNX model: {e}") from e
    inputs = {i.name for i in graph_inputs(model.graph)}
    seen: set[str] = set()
    for out in model.graph.output:
        if out.name in inputs or out.name in seen:
            what = "also an input" if out.name in inputs else "listed twice"
            raise FusionError(
                f"model {name!r}: output {out.name!r} is {what}; anchors need distinct names. "
                "Hint: add an Identity node that renames the output"
            )
        seen.add(out.name)


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
