"""Precision conversion: ``fp16`` turns a model float16, keeping float32 where float16 would change its answer.

Which nodes keep float32 is measured on the model itself, on representative
inputs (``fusion.calibration``), by the rules below, in order:

1. **weights**: a node that reads a weight past float16's largest value (65,504) keeps float32.
2. **range**: the float32 model runs on the inputs; every node that reads or writes a value past
   ``RANGE_LIMIT`` keeps float32. The limit is a 64th of float16's largest value, because other inputs
   reach further than the calibration ones (docs/fusion.md gives the measurement).
3. **op**: onnxconverter-common's op block list (``Resize``, ``Range``, ``TopK`` …) keeps its ops float32.
4. **error**: the converted model runs on the same inputs. When its error against float32 passes the
   tolerance, the nodes left in float16 are bisected, as onnxconverter-common's
   ``auto_convert_mixed_precision`` does: a run of nodes that cannot convert without passing the
   tolerance is split in two, each half tried, until every node is placed or ``MAX_TRIALS`` conversions
   were measured (nodes never tried keep float32: ``untried``).

The error is the share of each output's magnitude that moved, ``mean |fp16 - fp32| / mean |fp32|`` (relative
L1; an output averaging below float16's smallest normal value is measured against that value), of the worst
output over every request; the report also gives the largest absolute deviation. A dense
map (a detector's probabilities) keeps a few values on decision boundaries that any float16 rounding moves,
which a largest-deviation tolerance would flag on every model.

Rules 1 and 2 are those of TensorRT Model Optimizer's AutoCast; rule 4 is what makes the choice a measurement
of the answer. Measuring runs onnxruntime's CPU backend, as the CPU target does: there, float16 rounds the
weights, the inputs and outputs, and the values passed between float16 and float32 kernels, while a run of
float16 nodes without float16 kernels computes in float32. A device with float16 units rounds more, which
representative calibration inputs and a check of its answers cover. The pass copies its input; control-flow
nodes (``If``, ``Loop``, ``Scan``) convert whole, as their bodies read the enclosing graph's values.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import numpy_helper

from popfuse.runtime.backends import DEFAULT_TARGET, Session, SessionOptions, resolve_target

from ..calibration import Calibration, checked, generated
from ..errors import FusionError
from ..graph import copy_model, graph_inputs
from ..pipeline import PassResult

FP16_MAX = 65504.0
RANGE_LIMIT = 1024.0
TOLERANCE = 1e-2
MAX_TRIALS = 32

# Below float16's smallest subnormal a weight would vanish; onnxconverter-common moves it to that value.
_FP16_MIN_POSITIVE = 5.96e-08
_CONTROL_FLOW = {"If", "Loop", "Scan"}
_REASONS = ("weights", "range", "op", "error", "untried")
# An output averaging below float16's smallest normal value is measured against it, not against its own scale.
_SMALLEST_SCALE = 2.0**-14
# Intermediate values fetched at once when measuring ranges: more runs, but bounded memory for large inputs.
_FETCH_BYTES = 256 << 20


class PrecisionError(FusionError):
    """A strict fp16 build measured an error past the tolerance."""


class PrecisionWarning(UserWarning):
    """An fp16 model's measured error passed the documented tolerance."""


@dataclass(frozen=True)
class PrecisionOptions:
    """How fp16 chooses and checks what it converts.

    Attributes:
        calibration: Representative requests; None generates one (``fusion.calibration.generated``).
        keep_io_types: Keep float32 inputs and outputs around the float16 graph; False makes them float16.
        strict: Raise PrecisionError when the error passes ``tolerance``, instead of warning.
        tolerance: The largest relative L1 error accepted.
        custom_op_libraries: Shared libraries the model's custom ops need, to run it.
    """

    calibration: Calibration | None = None
    keep_io_types: bool = False
    strict: bool = False
    tolerance: float = TOLERANCE
    custom_op_libraries: tuple[str, ...] = ()


@dataclass(frozen=True)
class PrecisionReport:
    """What fp16 kept in float32 and what it measured.

    Attributes:
        nodes: Nodes that compute floats.
        kept: Node name → why it keeps float32 (``weights``, ``range``, ``op``, ``error`` or ``untried``).
        error: Relative L1 error of the worst output, over every request.
        max_error: Largest absolute deviation of any output value.
        tolerance: The tolerance the error was judged by.
        calibration: Where the requests came from (file names, ``memory`` or ``generated``).
        requests: How many requests were run.
        trials: Conversions measured while bisecting (0 when the first one was within tolerance).
        io_type: ``float16`` or ``float32``: the converted model's float inputs and outputs.
    """

    nodes: int
    kept: Mapping[str, str] = field(hash=False)
    error: float
    max_error: float
    tolerance: float
    calibration: str
    requests: int
    trials: int
    io_type: str

    @property
    def within_tolerance(self) -> bool:
        return self.error <= self.tolerance

    def summary(self) -> str:
        """One line: nodes kept float32 and why, the error, and on what it was measured."""
        reasons = {r: sum(1 for v in self.kept.values() if v == r) for r in _REASONS}
        why = ", ".join(f"{n} {r}" for r, n in reasons.items() if n)
        searched = f" after {self.trials} trial conversions" if self.trials else ""
        return (
            f"fp16: {len(self.kept)} of {self.nodes} nodes kept float32{f' ({why})' if why else ''}{searched}; "
            f"error {self.error:.2e} (largest deviation {self.max_error:.2e}) on {self.requests} "
            f"{'request' if self.requests == 1 else 'requests'} from {self.calibration} inputs, "
            f"tolerance {self.tolerance:.0e}; {self.io_type} inputs and outputs"
        )


def convert_precision(
    model: onnx.ModelProto, precision: str, options: PrecisionOptions | None = None
) -> PassResult[PrecisionReport | None]:
    """Return ``model`` in ``precision``; ``fp32`` (or a model with no float32) leaves it as it is.

    Details: the PrecisionReport of an fp16 conversion, None otherwise.

    Raises:
        PrecisionError: ``options.strict`` and the measured error passes the tolerance.
        FusionError: the calibration requests do not fit the model's inputs.
        BackendError: onnxruntime cannot run the model or its conversion.
    """
    if precision == "fp32" or not _has_float32(model.graph):
        return PassResult(model, False, None)
    options = options or PrecisionOptions()
    base = _prepared(model)
    calibration = options.calibration or generated(base)
    measure = _Measure(base, checked(calibration, base), options.custom_op_libraries)
    computing = [n for n in base.graph.node if _computes_floats(n, measure.float_values)]
    kept = dict.fromkeys(_reading_large_weights(base), "weights")
    for name in _touching_large_values(base, measure.ranges(base)):
        kept.setdefault(name, "range")
    for node in computing:
        if node.op_type in _op_block_list():
            kept.setdefault(node.name, "op")
    kept = {n: r for n, r in kept.items() if n not in measure.control_flow}

    def attempt(fp32: set[str]) -> tuple[onnx.ModelProto, tuple[float, float]]:
        converted = _convert(base, fp32, options.keep_io_types)
        return converted, measure.error(converted)

    converted, (error, largest) = attempt(set(kept))
    trials = 0
    if error > options.tolerance:
        candidates = [n.name for n in computing if n.name not in kept and n.name not in measure.control_flow]
        _, (floor, _) = attempt(set(kept) | set(candidates))
        if floor <= options.tolerance:  # else float16 inputs and outputs alone pass the tolerance
            bad, untried, trials = bisect(
                candidates, lambda fp32: attempt(set(kept) | fp32)[1][0] <= options.tolerance
            )
            kept.update(dict.fromkeys(bad, "error"))
            kept.update(dict.fromkeys(untried, "untried"))
            converted, (error, largest) = attempt(set(kept))
    onnx.checker.check_model(converted)
    report = PrecisionReport(
        nodes=len(computing),
        kept=kept,
        error=error,
        max_error=largest,
        tolerance=options.tolerance,
        calibration=calibration.source,
        requests=len(calibration.requests),
        trials=trials,
        io_type="float32" if options.keep_io_types else "float16",
    )
    if options.strict and not report.within_tolerance:
        raise PrecisionError(
            f"{report.summary()}: the error passes the tolerance. Hint: give representative inputs "
            "(calibration), or build this model in fp32"
        )
    return PassResult(converted, True, report)


def warn_outside_tolerance(report: PrecisionReport | None, subject: str) -> None:
    """Warn (PrecisionWarning) when ``report``'s error passes its tolerance; ``subject`` names the model."""
    if report is not None and not report.within_tolerance:
        requests = f"{report.requests} {'request' if report.requests == 1 else 'requests'}"
        warnings.warn(
            f"{subject}: fp16 error {report.error:.2e} passes the tolerance {report.tolerance:.0e} "
            f"({len(report.kept)} of {report.nodes} nodes kept float32; measured on {requests} from "
            f"{report.calibration} inputs). Hint: give representative inputs (calibration), or build it in fp32",
            PrecisionWarning,
            stacklevel=2,
        )


def bisect(candidates: Sequence[str], converts: Callable[[set[str]], bool],
           max_trials: int = MAX_TRIALS) -> tuple[set[str], set[str], int]:
    """The candidates that must keep float32, found by bisecting runs of them.

    ``converts(fp32)`` says whether the model is within tolerance when the nodes
    in ``fp32`` keep float32 and the others convert. The whole list is known not
    to convert; each trial converts the longest untried run, with the runs found
    good, keeping the untried ones float32.

    Returns:
        The nodes found bad, those never tried (both keep float32), and the trials made.
    """
    runs = _halves(list(candidates))
    good: set[str] = set()
    bad: set[str] = set()
    trials = 0
    while runs and trials < max_trials:
        run = max(runs, key=len)
        at = runs.index(run)
        rest = {n for r in runs if r is not run for n in r}
        trials += 1
        if converts(bad | rest):
            good.update(run)
            del runs[at]
        elif len(run) == 1:
            bad.update(run)
            del runs[at]
        else:
            runs[at : at + 1] = _halves(run)
    return bad, {n for r in runs for n in r}, trials


def _halves(run: list[str]) -> list[list[str]]:
    half = len(run) // 2
    return [part for part in (run[:half], run[half:]) if part]


class _Measure:
    """Runs a model and its conversions on the calibration requests, through the CPU backend."""

    def __init__(self, model: onnx.ModelProto, requests: Sequence[dict[str, np.ndarray]],
                 libraries: tuple[str, ...] = ()):
        self._backend, self._device = resolve_target(DEFAULT_TARGET)
        self._libraries = libraries
        self._requests = requests
        self._outputs = [o.name for o in model.graph.output]
        session = self._open(model)
        self._reference = [session.run(self._outputs, r) for r in requests]
        inferred = onnx.shape_inference.infer_shapes(model)
        types = {v.name: v.type.tensor_type.elem_type
                 for v in (*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output)}
        types.update({t.name: t.data_type for t in model.graph.initializer})
        self.float_values = {name for name, t in types.items() if t == onnx.TensorProto.FLOAT}
        self.control_flow = {n.name for n in model.graph.node if n.op_type in _CONTROL_FLOW}

    def _open(self, model: onnx.ModelProto, optimize: bool = True) -> Session:
        options = SessionOptions(optimize=optimize, custom_op_libraries=self._libraries)
        return self._backend.open(model.SerializeToString(), (), self._device, options)

    def ranges(self, model: onnx.ModelProto) -> dict[str, float]:
        """The largest magnitude each float value (graph inputs and node outputs) reaches over the requests."""
        names = [i.name for i in graph_inputs(model.graph) if i.name in self.float_values]
        found = {n: max(float(np.abs(r[n]).max(initial=0.0)) for r in self._requests) for n in names}
        produced = [o for n in model.graph.node for o in n.output if o in self.float_values]
        for group in _groups(model, produced, self._requests[0]):
            probe = copy_model(model)
            del probe.graph.output[:]
            probe.graph.output.extend(onnx.ValueInfoProto(name=name) for name in group)
            session = self._open(probe, optimize=False)  # every value fetched is an output: nothing to fuse
            for request in self._requests:
                for name, value in zip(group, session.run(group, request)):
                    found[name] = max(found.get(name, 0.0), float(np.abs(value).max(initial=0.0)))
        return found

    def error(self, converted: onnx.ModelProto) -> tuple[float, float]:
        """Relative L1 error of the worst output over every request, and the largest absolute deviation."""
        session = self._open(converted)
        types = {p.name: p.dtype for p in session.inputs}
        worst = largest = 0.0
        for request, reference in zip(self._requests, self._reference):
            feeds = {n: a.astype(types[n]) if types.get(n) is not None else a for n, a in request.items()}
            for want, got in zip(reference, session.run(self._outputs, feeds)):
                relative, deviation = compare(want, got)
                worst, largest = max(worst, relative), max(largest, deviation)
        return worst, largest


def compare(want: np.ndarray, got: np.ndarray) -> tuple[float, float]:
    """Relative L1 error of ``got`` against ``want`` and their largest absolute deviation; a non-float output
    counts the share of its values that differ, and a non-finite value where ``want`` is finite counts as
    infinite error."""
    if want.dtype.kind != "f":
        share = float(np.mean(want != got)) if want.size else 0.0
        return share, share
    a, b = want.astype(np.float64), np.asarray(got).astype(np.float64)
    finite = np.isfinite(a)
    if not np.isfinite(b[finite]).all():
        return float("inf"), float("inf")
    deviation = np.abs(a[finite] - b[finite])
    if not deviation.size:
        return 0.0, 0.0
    scale = max(float(np.abs(a[finite]).mean()), _SMALLEST_SCALE)
    return float(deviation.mean()) / scale, float(deviation.max())


def _groups(model: onnx.ModelProto, names: list[str], request: Mapping[str, np.ndarray]) -> list[list[str]]:
    """``names`` split into runs whose values together stay within ``_FETCH_BYTES``, estimated from shapes
    inferred for the request's input shapes (a value of unknown size counts as large as the largest input)."""
    probe = copy_model(model)
    for info in graph_inputs(probe.graph):
        if info.name in request:
            dims = info.type.tensor_type.shape.dim
            del dims[:]
            for size in request[info.name].shape:
                dims.add().dim_value = size
    inferred = onnx.shape_inference.infer_shapes(probe)
    fallback = max((a.nbytes for a in request.values()), default=0)
    sizes = {}
    for v in inferred.graph.value_info:
        dims = v.type.tensor_type.shape.dim
        known = all(d.HasField("dim_value") for d in dims)
        sizes[v.name] = int(np.prod([d.dim_value for d in dims])) * 4 if known else fallback
    groups: list[list[str]] = [[]]
    total = 0
    for name in names:
        size = sizes.get(name, fallback)
        if groups[-1] and total + size > _FETCH_BYTES:
            groups.append([])
            total = 0
        groups[-1].append(name)
        total += size
    return [g for g in groups if g]


def _prepared(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy whose float ``Constant`` nodes are initializers (so a kept node's weight stays float32 like any
    other) and whose nodes all have distinct names (the converter keeps nodes float32 by name)."""
    out = copy_model(model)
    graph = out.graph
    nodes = list(graph.node)
    del graph.node[:]
    for node in nodes:
        value = _constant_value(node)
        if value is not None and value.dtype == np.float32:
            graph.initializer.append(numpy_helper.from_array(value, node.output[0]))
        else:
            graph.node.append(node)
    # A value_info of a constant now an initializer would be converted to float16 with the values around
    # it, though the initializer stays float32 when a float32 node reads it.
    weights = {t.name for t in graph.initializer}
    infos = [v for v in graph.value_info if v.name not in weights]
    del graph.value_info[:]
    graph.value_info.extend(infos)
    seen: set[str] = set()
    for k, node in enumerate(graph.node):
        if not node.name or node.name in seen:
            node.name = f"{node.op_type}_{k}"
            while node.name in seen:
                node.name += "_"
        seen.add(node.name)
    return out


def _constant_value(node: onnx.NodeProto) -> np.ndarray | None:
    if node.op_type != "Constant" or node.domain not in ("", "ai.onnx") or len(node.attribute) != 1:
        return None
    attr = node.attribute[0]
    if attr.name == "value":
        return numpy_helper.to_array(attr.t)
    if attr.name in ("value_float", "value_floats"):
        return np.array(attr.f if attr.name == "value_float" else list(attr.floats), np.float32)
    return None


def _computes_floats(node: onnx.NodeProto, float_values: set[str]) -> bool:
    return any(o in float_values for o in node.output)


def _reading_large_weights(model: onnx.ModelProto) -> set[str]:
    """Nodes that read a float32 weight with a finite value past float16's largest."""
    large = set()
    for t in model.graph.initializer:
        if t.data_type == onnx.TensorProto.FLOAT:
            values = numpy_helper.to_array(t)
            if np.abs(values[np.isfinite(values)]).max(initial=0.0) > FP16_MAX:
                large.add(t.name)
    return {n.name for n in model.graph.node if large.intersection(n.input)}


def _touching_large_values(model: onnx.ModelProto, ranges: Mapping[str, float]) -> set[str]:
    """Nodes that read or write a value whose magnitude reached ``RANGE_LIMIT``."""
    large = {name for name, peak in ranges.items() if not peak <= RANGE_LIMIT}  # NaN counts as large
    return {n.name for n in model.graph.node if large.intersection(n.input) or large.intersection(n.output)}


def _convert(model: onnx.ModelProto, fp32: set[str], keep_io_types: bool) -> onnx.ModelProto:
    """``model`` in float16 but the nodes named in ``fp32`` (and the op block list), behind casts.

    The steps of onnxconverter-common's ``convert_float_to_float16``, graph by graph, without its final
    cast pruning: that raises on some layouts of float32 nodes and misses values several of them read;
    ``_drop_round_trips`` prunes instead.
    """
    from onnxconverter_common import float16 as converter

    out = copy_model(model)
    _own_weights(out.graph, fp32)
    out = onnx.shape_inference.infer_shapes(out)  # the converter types each value from its value_info
    blocked_ops = set(_op_block_list())
    renamed: dict[str, str] = {}
    graphs, top = [out.graph], True
    with warnings.catch_warnings():
        # it warns for each weight below float16's smallest subnormal, which it moves to that value
        warnings.simplefilter("ignore")
        while graphs:
            nested = []
            for graph in graphs:
                converter.process_graph_input(graph, top, keep_io_types, renamed)
                kept_values = converter.process_tensor_in_node(
                    graph, blocked_ops, fp32, _FP16_MIN_POSITIVE, FP16_MAX
                )
                converter.process_value_info(graph, kept_values)
                converter.process_node_in_block_list(graph, renamed, blocked_ops, fp32)
                converter.process_initializers(graph, blocked_ops, fp32, _FP16_MIN_POSITIVE, FP16_MAX)
                converter.process_graph_output(graph, top, keep_io_types)
                nested.extend(converter.get_next_level_graph(graph, blocked_ops, fp32))
                if not top:
                    converter.process_node_input_output(graph, renamed)
                top = False
            graphs = nested
    converter.sort_topology(out.graph)
    out.ir_version = model.ir_version
    original = {n.name for n in model.graph.node}
    _keep_output_types(out, model, original, keep_io_types)
    _drop_round_trips(out, original)
    return out


def _keep_output_types(converted: onnx.ModelProto, model: onnx.ModelProto, original: set[str], keep_io_types: bool):
    """Give each float32 output of ``model`` its promised type in ``converted``, in place.

    With ``keep_io_types``, the converter still casts an output to float16 when a
    float32 node makes it: the cast it added is turned to float32 instead.
    """
    want = onnx.TensorProto.FLOAT if keep_io_types else onnx.TensorProto.FLOAT16
    was_float32 = {o.name for o in model.graph.output if o.type.tensor_type.elem_type == onnx.TensorProto.FLOAT}
    producer = {o: n for n in converted.graph.node for o in n.output}
    for output in converted.graph.output:
        tensor_type = output.type.tensor_type
        if output.name not in was_float32 or tensor_type.elem_type == want:
            continue
        cast = producer.get(output.name)
        if cast is None or cast.op_type != "Cast" or cast.name in original:
            raise FusionError(f"fp16 conversion left output {output.name!r} in the wrong type; please report it")
        next(a for a in cast.attribute if a.name == "to").i = want
        tensor_type.elem_type = want


def _drop_round_trips(model: onnx.ModelProto, original: set[str]) -> None:
    """Remove the converter's float32 → float16 → float32 cast pairs, in place.

    The converter casts a float32 node's output to float16 and back before each
    float32 node that reads it; it removes such a pair only when the value has
    one reader, so a value read by several float32 nodes would lose precision
    between them. Casts of the source model (named in ``original``) stay.
    """
    graph = model.graph
    producer = {o: n for n in graph.node for o in n.output}
    float32 = _float32_values(model)
    kept_outputs = {o.name for o in graph.output}
    replace: dict[str, str] = {}
    for node in graph.node:
        if node.op_type != "Cast" or node.name in original or _cast_to(node) != onnx.TensorProto.FLOAT:
            continue
        down = producer.get(node.input[0])
        if (down is not None and down.op_type == "Cast" and down.name not in original
                and _cast_to(down) == onnx.TensorProto.FLOAT16 and down.input[0] in float32
                and node.output[0] not in kept_outputs):
            replace[node.output[0]] = down.input[0]
    if not replace:
        return
    survivors = [n for n in graph.node if n.output[0] not in replace]
    for node in survivors:
        node.input[:] = [replace.get(i, i) for i in node.input]
    read = {i for n in survivors for i in n.input} | kept_outputs | _read_by_subgraphs(graph)
    nodes = [n for n in survivors if n.op_type != "Cast" or n.name in original or any(o in read for o in n.output)]
    del graph.node[:]
    graph.node.extend(nodes)


def _cast_to(node: onnx.NodeProto) -> int:
    return next((a.i for a in node.attribute if a.name == "to"), 0)


def _float32_values(model: onnx.ModelProto) -> set[str]:
    """Values of a converted graph whose type is float32: its inputs, weights, and what nodes make (the
    converter keeps every value's type in ``value_info``)."""
    graph = model.graph
    values = (*graph.input, *graph.value_info, *graph.output)
    out = {v.name for v in values if v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT}
    return out | {t.name for t in graph.initializer if t.data_type == onnx.TensorProto.FLOAT}


def _read_by_subgraphs(graph: onnx.GraphProto) -> set[str]:
    """Names read inside the graphs nested in ``graph``'s nodes (outer-scope values included)."""
    from ..graph import subgraphs, walk_nodes

    return {i for n in graph.node for sub in subgraphs(n) for m in walk_nodes(sub.node) for i in m.input}


def _own_weights(graph: onnx.GraphProto, fp32: set[str]) -> None:
    """Give float32 nodes their own copy of each float weight they share with float16 ones.

    The converter leaves every weight a float32 node reads in float32, which would
    hand a float16 node that reads it too a float32 input.
    """
    blocked = _op_block_list()
    kept = [n for n in graph.node if n.name in fp32 or n.op_type in blocked]
    converted_reads = {i for n in graph.node if n.name not in fp32 and n.op_type not in blocked for i in n.input}
    weights = {t.name: t for t in graph.initializer if t.data_type == onnx.TensorProto.FLOAT}
    names = {t.name for t in graph.initializer} | {o for n in graph.node for o in n.output}
    copies: dict[str, str] = {}
    for node in kept:
        for k, name in enumerate(node.input):
            if name in weights and name in converted_reads:
                if name not in copies:
                    copy = f"{name}_fp32"
                    while copy in names:
                        copy += "_"
                    names.add(copy)
                    tensor = onnx.TensorProto()
                    tensor.CopyFrom(weights[name])
                    tensor.name = copy
                    graph.initializer.append(tensor)
                    copies[name] = copy
                node.input[k] = copies[name]


def _has_float32(graph: onnx.GraphProto) -> bool:
    """Whether any input, output, weight or constant of ``graph`` is float32."""
    if any(v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT for v in (*graph.input, *graph.output)):
        return True
    if any(t.data_type == onnx.TensorProto.FLOAT for t in graph.initializer):
        return True
    return any(
        a.t.data_type == onnx.TensorProto.FLOAT
        for n in graph.node
        for a in n.attribute
        if a.type == onnx.AttributeProto.TENSOR
    )


@functools.cache
def _op_block_list() -> frozenset[str]:
    """onnxconverter-common's ops that always keep float32 (imported when fp16 is first asked for)."""
    from onnxconverter_common.float16 import DEFAULT_OP_BLOCK_LIST

    return frozenset(DEFAULT_OP_BLOCK_LIST)
