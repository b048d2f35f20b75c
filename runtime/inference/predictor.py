"""``Predictor``: runs the model a Config names, on backend sessions or a fused artifact's Runner."""

from __future__ import annotations

import itertools
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..backends import Session, SessionOptions, resolve_target
from ..config import RuntimeConfig
from ..dtypes import numpy_from_popef
from ..errors import PopfuseError
from ..popef import MAGIC
from ..runner import Runner
from .config import Config, Fp16Settings
from .tensor import Tensor

if TYPE_CHECKING:  # onnx loads only when a model is compiled here
    import onnx

log = logging.getLogger(__name__)


class Predictor:
    """Paddle Inference's predictor over an ``.onnx`` model or a fused ``.popef`` artifact."""

    def __init__(self, config: Config, _shared: Predictor | None = None):
        self.config = config
        if _shared is not None:  # clone(): the same sessions (weights), new handles
            self._engine = _shared._engine
        else:
            config._claim()
            data = config.model_bytes()
            self._engine = _ArtifactEngine(data, config) if data[:4] == MAGIC else _OnnxEngine(data, config)
        self._feeds: dict[str, np.ndarray] = {}
        self._results: dict[str, np.ndarray] = {}
        self._inputs = {n: Tensor(n, t, s, self._feeds) for n, t, s in self._engine.inputs}
        self._outputs = {n: Tensor(n, t, s, self._results) for n, t, s in self._engine.outputs}
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

    def run(self, inputs: list[np.ndarray] | None = None) -> list[np.ndarray] | bool:
        """Run on the input handles' data; or, given arrays in input order, return the outputs in order."""
        if inputs is not None:
            names = self.get_input_names()
            if len(inputs) != len(self._engine.inputs):
                raise RuntimeError(f"run() received {len(inputs)} arrays; the model has inputs {', '.join(names)}")
            for name, array in zip(names, inputs):
                self._inputs[name].copy_from_cpu(array)
        shrink, self._shrink_next = self._shrink_next, False
        try:
            results = self._engine.run(self._feeds, shrink)
        except PopfuseError as e:
            raise RuntimeError(str(e)) from e
        self._results.clear()
        self._results.update({name: results[name] for name in self._outputs if name in results})
        if inputs is not None:
            return [results[n] for n in self.get_output_names() if n in results]
        return True

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
        return bool(self.run())


def create_predictor(config: Config) -> Predictor:
    """``paddle.inference.create_predictor``."""
    return Predictor(config)


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
        options = config.session_options()
        if ipu:
            data = _apply_ipu_options(data, ipu, config.fp16_settings(), options.custom_op_libraries,
                                      Path(config.prog_file()).name or "the model")
        replicas = max(1, int((ipu or {}).get("ipu_replica_num", 1)))
        self.sessions = open_sessions(data, options, "cuda" if config.use_gpu() else "cpu", replicas)
        if options.optimized_model_path:
            _write_dot(options.optimized_model_path)
        self._turn = itertools.count()
        self.steps = int(ipu["ipu_batches_per_step"]) if ipu and ipu["ipu_enable_pipelining"] else 1
        first = self.sessions[0]
        self.inputs = [(p.name, p.dtype or np.dtype(np.float32), list(p.shape)) for p in first.inputs]
        self.outputs = [(p.name, p.dtype or np.dtype(np.float32), list(p.shape)) for p in first.outputs]

    def run(self, feeds: dict[str, np.ndarray], shrink: bool = False) -> dict[str, np.ndarray]:
        missing = [n for n, _, _ in self.inputs if n not in feeds]
        if missing:
            raise RuntimeError(f"inputs {', '.join(missing)} have no data; copy_from_cpu() them first")
        session = self.sessions[next(self._turn) % len(self.sessions)]
        names = [n for n, _, _ in self.outputs]
        return dict(zip(names, run_steps(session, names, feeds, self.steps, shrink)))


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

    def run(self, feeds: dict[str, np.ndarray], shrink: bool = False) -> dict[str, np.ndarray]:
        if not feeds:
            raise RuntimeError("no input has data; copy_from_cpu() the inputs of one subgraph first")
        return self.runner.execute(feeds)


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
