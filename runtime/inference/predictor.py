"""``Predictor``: runs the model a Config names, on backend sessions or a fused artifact's Runner."""

from __future__ import annotations

import collections
import importlib.util
import itertools
import logging
import threading
from collections.abc import Callable, Sequence
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..artifact import to_blobs
from ..atomic import write_atomic
from ..backends import Port, Session, SessionOptions, resolve_target
from ..config import RuntimeConfig
from ..dtypes import numpy_from_popef
from ..errors import ExecutionError, PopfuseError
from ..popef import MAGIC, iter_encoded
from ..runner import Runner
from ..tensors import mismatch
from .config import Config, Fp16Settings
from .paddle_models import Conversion
from .tensor import Tensor

if TYPE_CHECKING:  # onnx loads only when a model is compiled here
    import onnx

log = logging.getLogger(__name__)

# (op type, tensor name, tensor): Paddle's hook signature.
Hook = Callable[[str, str, Any], None]


class Predictor:
    """Paddle Inference's predictor over an ``.onnx`` model, a Paddle model or a fused ``.popef`` artifact."""

    def __init__(self, config: Config, _shared: Predictor | None = None):
        self.config = config
        if _shared is not None:  # clone(): the same sessions (weights), new handles
            self._engine = _shared._engine
            self._conversion = _shared._conversion
            self._shapes = _shared._shapes
        else:
            config._claim()
            source = config.load_model()
            self._conversion = source if isinstance(source, Conversion) else None
            data = source.data if isinstance(source, Conversion) else source
            self._engine = _ArtifactEngine(data, config) if data[:4] == MAGIC else _OnnxEngine(data, config)
            self._shapes = _ShapeRanges(config.shape_range_info_path()) if config.shape_range_info_collected() \
                else None
        self._feeds: dict[str, np.ndarray] = {}
        self._results: dict[str, np.ndarray] = {}
        self._inputs = {n: Tensor(n, self._feeds) for n, _, _ in self._engine.inputs}
        self._outputs = {n: Tensor(n, self._results) for n, _, _ in self._engine.outputs}
        self._input_hooks: list[Hook] = []
        self._output_hooks: list[Hook] = []
        self._shrink_next = False

    def get_input_names(self) -> list[str]:
        return list(self._inputs)

    def get_output_names(self) -> list[str]:
        return list(self._outputs)

    def get_input_handle(self, name: str) -> Tensor:
        if name not in self._inputs:
            raise RuntimeError(f"the model has no input {name!r}; inputs: {', '.join(self._inputs)}")
        return self._inputs[name]

    def get_output_handle(self, name: str) -> Tensor:
        if name not in self._outputs:
            raise RuntimeError(f"the model has no output {name!r}; outputs: {', '.join(self._outputs)}")
        return self._outputs[name]

    def run(self, inputs: Sequence[Any] | None = None) -> list[Any] | None:
        """Run on the input handles' data (returns None); or, given tensors in input order, return the outputs
        in order: paddle.Tensor for paddle.Tensor inputs (as Paddle), numpy arrays for numpy arrays.

        Raises:
            ValueError: an input has no data, or data of another dtype, rank or shape than the model takes,
                or ``inputs`` has another length than the model's inputs (Paddle's error type).
            TypeError: ``inputs`` holds something else than paddle.Tensor or numpy arrays.
            RuntimeError: the engine failed for a reason that is not the inputs'.
        """
        if inputs is None:
            self._run()
            return None
        names = self.get_input_names()
        if not isinstance(inputs, (list, tuple)):
            raise TypeError(f"run() takes a list of tensors, received {type(inputs).__name__}")
        if len(inputs) != len(names):
            raise ValueError(f"run() received {len(inputs)} tensors; the model has inputs {', '.join(names)}")
        as_paddle = any(_is_paddle(x) for x in inputs)
        for name, value in zip(names, inputs):
            self._inputs[name].share_external_data(value.numpy() if _is_paddle(value) else value)
        self._run()
        outputs = [self._results[n] for n in self.get_output_names() if n in self._results]
        if as_paddle:
            import paddle

            return [paddle.to_tensor(o) for o in outputs]
        return [np.array(o, copy=True) for o in outputs]

    def _run(self) -> None:
        feeds = self._checked_feeds()
        shrink, self._shrink_next = self._shrink_next, False
        hooked = bool(self._input_hooks or self._output_hooks)
        try:
            if hooked:
                results, values = self._engine.trace(feeds)
            else:
                results = self._engine.run(feeds, shrink)
        except ExecutionError as e:
            raise ValueError(str(e)) from e
        except PopfuseError as e:
            raise RuntimeError(str(e)) from e
        self._results.clear()
        self._results.update({name: results[name] for name in self._outputs if name in results})
        if hooked:
            self._fire_hooks(values)
        if self._conversion is not None:
            self._conversion.keep()  # it loaded and ran: worth converting only once
        if self._shapes is not None:
            self._shapes.record({**feeds, **self._results})

    def _checked_feeds(self) -> dict[str, np.ndarray]:
        """The input handles' data, int32 widened to a model's int64 (as Paddle's kernels accept it)."""
        feeds = {}
        for name, dtype, shape in self._engine.inputs:
            if name not in self._feeds:
                continue
            array = self._feeds[name]
            if array.dtype == np.int32 and dtype == np.int64:
                array = array.astype(np.int64)
            problem = mismatch(array, dtype, shape)
            if problem:
                raise ValueError(f"input {name!r}: {problem}")
            feeds[name] = array
        unfed = self._engine.unfed(feeds)
        if unfed:
            raise ValueError(unfed)
        return feeds

    def _fire_hooks(self, values: dict[str, np.ndarray]) -> None:
        wrap = _hook_tensor()
        for op_type, inputs, outputs in self._engine.nodes:
            for hook in self._input_hooks:
                for name in inputs:
                    if name in values:
                        hook(op_type, name, wrap(values[name]))
            for hook in self._output_hooks:
                for name in outputs:
                    if name in values:
                        hook(op_type, name, wrap(values[name]))

    def register_output_hook(self, hookfunc: Hook) -> None:
        """Call ``hookfunc(op_type, tensor_name, tensor)`` after each run, for every output of every operator of
        the model's main graph, in graph order (see docs/inference.md for what onnxruntime allows)."""
        self._output_hooks.append(hookfunc)

    def register_input_hook(self, hookfunc: Hook) -> None:
        """Call ``hookfunc(op_type, tensor_name, tensor)`` after each run, for every input of every operator of
        the model's main graph (weights included), in graph order."""
        self._input_hooks.append(hookfunc)

    def clone(self) -> Predictor:
        """A predictor with its own handles, sharing this one's sessions and weights."""
        return Predictor(self.config, _shared=self)

    def clear_intermediate_tensor(self) -> None:
        """Drop the outputs the last run left in the handles."""
        self._results.clear()

    def try_shrink_memory(self) -> int:
        """Return the engine's free arena memory to the system after the next run."""
        self._shrink_next = True
        return 0

    # Paddle's older names.
    get_input_tensor = get_input_handle
    get_output_tensor = get_output_handle

    def zero_copy_run(self) -> bool:
        self._run()
        return True


def create_predictor(config: Config) -> Predictor:
    """``paddle.inference.create_predictor``."""
    return Predictor(config)


class PredictorPool:
    """``paddle.inference.PredictorPool``: ``size`` predictors of one config, sharing its sessions (weights),
    each with its own handles, for one thread each."""

    def __init__(self, config: Config, size: int = 1):
        if size < 1:
            raise ValueError(f"PredictorPool needs at least one predictor, received size {size}")
        first = Predictor(config)
        self._predictors = [first, *(first.clone() for _ in range(size - 1))]

    def retrieve(self, idx: int) -> Predictor:
        """Predictor ``idx``.

        Raises:
            ValueError: ``idx`` is not below the pool's size (Paddle's error type).
        """
        if not 0 <= idx < len(self._predictors):
            raise ValueError(f"PredictorPool has {len(self._predictors)} predictors; received index {idx}")
        return self._predictors[idx]


def _is_paddle(value: Any) -> bool:
    return type(value).__module__.startswith("paddle") and hasattr(value, "numpy")


@cache
def _hook_tensor() -> Callable[[np.ndarray], Any]:
    """What hooks receive: paddle.Tensor where paddle is installed (as Paddle's hooks), numpy arrays otherwise."""
    if importlib.util.find_spec("paddle") is None:
        return lambda array: array
    import paddle

    return paddle.to_tensor


def open_sessions(model: bytes, options: SessionOptions, device: str, count: int = 1) -> list[Session]:
    """``count`` sessions of a plain ONNX model, opened by the onnxruntime backend on ``device``.

    Raises:
        RuntimeError: the model does not load (Paddle's error type).
    """
    backend, device = resolve_target(f"onnxruntime-{device}")
    try:
        return [backend.open(model, (), device, options) for _ in range(count)]
    except PopfuseError as e:
        raise RuntimeError(f"cannot load the model: {e}") from e


class _OnnxEngine:
    """An ONNX model on backend sessions, with the Config's options applied."""

    def __init__(self, data: bytes, config: Config):
        ipu = config.ipu_options if config.use_ipu() else None
        self._options = config.session_options()
        if ipu:
            data = _apply_ipu_options(data, ipu, config.fp16_settings(), self._options.custom_op_libraries,
                                      config.model_label())
        self._model = data
        replicas = max(1, int((ipu or {}).get("ipu_replica_num", 1)))
        self._device = "cuda" if config.use_gpu() else "cpu"
        if ipu and ipu["ipu_enable_model_runtime_executor"]:
            self.sessions = [RuntimeSession(data, self._options, self._device)] * replicas
        else:
            self.sessions = open_sessions(data, self._options, self._device, replicas)
        if self._options.optimized_model_path:
            _write_dot(self._options.optimized_model_path)
        self._turn = itertools.count()
        self.steps = int(ipu["ipu_batches_per_step"]) if ipu and ipu["ipu_enable_pipelining"] else 1
        first = self.sessions[0]
        # With pipelining a run takes `steps` micro-batches stacked on the first dimension.
        self.inputs = [(p.name, p.dtype or np.dtype(np.float32), _stacked(p.shape, self.steps)) for p in first.inputs]
        self.outputs = [(p.name, p.dtype or np.dtype(np.float32), list(p.shape)) for p in first.outputs]
        self._tracer: _Tracer | None = None
        self._lock = threading.Lock()

    def unfed(self, feeds: dict[str, np.ndarray]) -> str | None:
        """Why ``feeds`` cannot run, if inputs lack data."""
        missing = [n for n, _, _ in self.inputs if n not in feeds]
        return f"inputs {', '.join(missing)} have no data; copy_from_cpu() them first" if missing else None

    def run(self, feeds: dict[str, np.ndarray], shrink: bool = False) -> dict[str, np.ndarray]:
        session = self.sessions[next(self._turn) % len(self.sessions)]
        names = [n for n, _, _ in self.outputs]
        return dict(zip(names, run_steps(session, names, feeds, self.steps, shrink)))

    @property
    def nodes(self) -> list[tuple[str, list[str], list[str]]]:
        return self._traced().nodes

    def trace(self, feeds: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """The outputs, and every value of the main graph (weights included) by name."""
        return self._traced().run(feeds, [n for n, _, _ in self.outputs], self.steps)

    def _traced(self) -> _Tracer:
        with self._lock:  # opened once, on the first hooked run, and shared by clones
            if self._tracer is None:
                self._tracer = _Tracer(self._model, self._options, self._device)
            return self._tracer


def _stacked(shape: tuple[int, ...], steps: int) -> list[int]:
    shape = list(shape)
    if steps > 1 and shape and shape[0] > 0:
        shape[0] *= steps
    return shape


class _Tracer:
    """A second session of the model whose outputs are every value its main graph computes.

    onnxruntime runs a graph as one call, so the hooks see the values after the run; a value
    inside an ``If`` or ``Loop`` branch is not a graph value and is not reported.
    """

    def __init__(self, model: bytes, options: SessionOptions, device: str):
        import onnx
        from onnx import helper, numpy_helper

        proto = onnx.load_from_string(model)
        graph = proto.graph
        self.nodes = [(n.op_type, [i for i in n.input if i], [o for o in n.output if o]) for n in graph.node]
        outputs = {o.name for o in graph.output}
        self._values = [o.name for o in graph.output]
        for _, _, produced in self.nodes:
            for name in produced:
                if name not in outputs:
                    graph.output.append(helper.make_empty_tensor_value_info(name))
                    outputs.add(name)
                    self._values.append(name)
        self.weights = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
        (self._session,) = open_sessions(proto.SerializeToString(), options, device)

    def run(self, feeds: dict[str, np.ndarray], outputs: list[str], steps: int):
        values = dict(zip(self._values, run_steps(self._session, self._values, feeds, steps)))
        return {n: values[n] for n in outputs}, {**self.weights, **feeds, **values}


class RuntimeSession:
    """``ipu_enable_model_runtime_executor``: the model compiled alone into an artifact and run by a Runner,
    as Paddle hands an IPU model to PopRT's model runtime. A Session under the model's own names."""

    def __init__(self, model: bytes, options: SessionOptions, device: str):
        import onnx

        from popfuse.fusion.compiler import compile_artifact
        from popfuse.fusion.fuse import fuse_models

        try:
            artifact = compile_artifact(fuse_models([onnx.load_from_string(model)]), f"onnxruntime-{device}")
            self._runner = Runner(b"".join(iter_encoded(to_blobs(artifact))), RuntimeConfig(
                validate_io_params=False, intra_op_num_threads=options.intra_op_num_threads))
        except PopfuseError as e:
            raise RuntimeError(f"cannot compile the model for the model runtime: {e}") from e
        (subgraph,) = self._runner.subgraphs
        local = subgraph.local_names
        self._anchor = {name: anchor for anchor, name in local.items()}
        described = {d.name: d for d in (*self._runner.get_execute_inputs(), *self._runner.get_execute_outputs())}

        def ports(names: tuple[str, ...]) -> tuple[Port, ...]:
            return tuple(Port(local[n], numpy_from_popef(described[n].data_type), tuple(described[n].shape))
                         for n in names)

        self.inputs, self.outputs = ports(subgraph.inputs), ports(subgraph.outputs)

    def run(self, output_names: Sequence[str], feeds: dict[str, np.ndarray],
            shrink_memory: bool = False) -> list[np.ndarray]:
        results = self._runner.execute({self._anchor[n]: array for n, array in feeds.items()})
        return [results[self._anchor[n]] for n in output_names]


def run_steps(session: Session, names: list[str], feeds: dict[str, np.ndarray], steps: int,
              shrink: bool = False) -> list[np.ndarray]:
    """Run ``feeds`` as ``steps`` micro-batches stacked on dimension 0 (pipelining), outputs stacked alike."""
    if steps == 1:
        return session.run(names, feeds, shrink)
    chunks = {n: np.array_split(a, steps) for n, a in feeds.items()}
    parts = [session.run(names, {n: c[k] for n, c in chunks.items()}, shrink) for k in range(steps)]
    return [np.concatenate([p[i] for p in parts]) for i in range(len(names))]


class _ArtifactEngine:
    """A fused artifact: every subgraph's inputs are the predictor's; ``run`` runs the one whose inputs are set."""

    def __init__(self, data: bytes, config: Config):
        threads = config.session_options().intra_op_num_threads
        try:
            self.runner = Runner(data, RuntimeConfig(validate_io_params=False, intra_op_num_threads=threads))
        except PopfuseError as e:
            raise RuntimeError(f"cannot load the artifact: {e}") from e
        anchors = {a.name: a for a in self.runner.metadata.anchors}

        def describe(names):
            return [(n, numpy_from_popef(anchors[n].tensor_info.data_type), list(anchors[n].tensor_info.shape))
                    for n in names]

        self.inputs = describe([n for s in self.runner.subgraphs for n in s.inputs])
        self.outputs = describe([n for s in self.runner.subgraphs for n in s.outputs])
        # What hooks see of a fused artifact: each subgraph as one operator, named for its model.
        self.nodes = [(s.name, list(s.inputs), list(s.outputs)) for s in self.runner.subgraphs]

    def unfed(self, feeds: dict[str, np.ndarray]) -> str | None:
        """Why ``feeds`` cannot run, if no input has data (the runner checks that one subgraph's inputs are whole)."""
        return None if feeds else "no input has data; copy_from_cpu() the inputs of one subgraph first"

    def run(self, feeds: dict[str, np.ndarray], shrink: bool = False) -> dict[str, np.ndarray]:
        return self.runner.execute(feeds)

    def trace(self, feeds: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        results = self.run(feeds)
        return results, {**feeds, **results}


class _ShapeRanges:
    """The smallest, largest and most frequent shape of each input and output, in Paddle's text format."""

    def __init__(self, path: str):
        self.path = Path(path)
        self._seen: dict[str, collections.Counter] = {}

    def record(self, arrays: dict[str, np.ndarray]) -> None:
        for name, array in arrays.items():
            self._seen.setdefault(name, collections.Counter())[tuple(array.shape)] += 1
        write_atomic(self.path, self.text().encode())

    def text(self) -> str:
        lines = []
        for name in sorted(self._seen):
            shapes = self._seen[name]
            ranks = {len(s) for s in shapes}
            if len(ranks) != 1:
                continue  # Paddle's format needs one rank
            smallest = [min(d) for d in zip(*shapes)]
            largest = [max(d) for d in zip(*shapes)]
            frequent = shapes.most_common(1)[0][0]
            lines.append("shape_range_info {")
            lines.append(f'  name: "{name}"')
            lines += [f"  min_shape: {d}" for d in smallest]
            lines += [f"  max_shape: {d}" for d in largest]
            lines += [f"  opt_shape: {d}" for d in frequent]
            lines.append("}")
        return "\n".join(lines) + "\n"


def _apply_ipu_options(data: bytes, options: dict, fp16: Fp16Settings, libraries: tuple[str, ...],
                       subject: str) -> bytes:
    """Apply the IPU options that change the graph: the micro-batch size, custom ops and fp16."""
    import onnx

    from popfuse.fusion.passes.shapes import set_batch_size

    from .custom_ops import map_custom_ops

    model = set_batch_size(onnx.load_from_string(data), int(options["ipu_micro_batch_size"])).model
    model = map_custom_ops(model, options["ipu_custom_ops_info"])
    if options["ipu_enable_fp16"]:
        model = to_fp16(model, fp16, libraries, subject)
    return model.SerializeToString()


def to_fp16(model: onnx.ModelProto, fp16: Fp16Settings, libraries: tuple[str, ...], subject: str) -> onnx.ModelProto:
    """The Paddle API's fp16: the compiler's precision pass, with float32 inputs and outputs unless
    ``low_precision_io``; its report is logged, and a PrecisionWarning says when it passes the tolerance.

    Raises:
        RuntimeError: (Paddle's error type) the calibration does not fit, or ``strict`` and the error passes.
    """
    from popfuse.fusion.calibration import as_calibration
    from popfuse.fusion.passes.precision import PrecisionOptions, convert_precision, warn_outside_tolerance

    try:
        options = PrecisionOptions(calibration=as_calibration(fp16.calibration, "fp16 calibration"),
                                   keep_io_types=not fp16.low_precision_io, strict=fp16.strict,
                                   custom_op_libraries=libraries)
        result = convert_precision(model, "fp16", options)
    except PopfuseError as e:
        raise RuntimeError(f"{subject}: {e}") from e
    if result.details is not None:
        log.info("%s: %s", subject, result.details.summary())
        warn_outside_tolerance(result.details, subject)
    return result.model


def _write_dot(onnx_path: str) -> None:
    """A Graphviz drawing of the optimised graph, next to it."""
    import onnx

    model = onnx.load(onnx_path, load_external_data=False)
    lines = ["digraph G {", "  rankdir=TB;"]
    for k, node in enumerate(model.graph.node):
        lines.append(f'  n{k} [label="{node.op_type}\\n{node.name}" shape=box];')
        for value in node.input:
            if value:
                lines.append(f'  "{value}" -> n{k};')
        for value in node.output:
            lines.append(f'  n{k} -> "{value}";')
    lines.append("}")
    Path(onnx_path).with_suffix(".dot").write_text("\n".join(lines) + "\n")
