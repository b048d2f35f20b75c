"""``Predictor``: runs the model a Config names, through onnxruntime or a fused artifact's Runner."""

from __future__ import annotations

import itertools
import logging
import os
from pathlib import Path

import numpy as np
import onnxruntime as ort

from ..dtypes import numpy_from_popef
from ..errors import PopfuseError
from ..popef import MAGIC
from ..runner import Runner
from .config import Config
from .custom_ops import map_custom_ops, register_custom_ops
from .tensor import Tensor

log = logging.getLogger(__name__)

_ORT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
              "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(int8)": np.int8,
              "tensor(uint8)": np.uint8, "tensor(bool)": np.bool_}


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
        self._inputs = {n: Tensor(n, t, s) for n, t, s in self._engine.inputs}
        self._outputs = {n: Tensor(n, t, s) for n, t, s in self._engine.outputs}

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
        feeds = {n: t._data for n, t in self._inputs.items() if t._data is not None}
        try:
            results = self._engine.run(feeds)
        except PopfuseError as e:
            raise RuntimeError(str(e)) from e
        for name, tensor in self._outputs.items():
            tensor._set(results.get(name))
        if inputs is not None:
            return [results[n] for n in self.get_output_names() if n in results]
        return True

    def clone(self) -> Predictor:
        """A predictor with its own handles, sharing this one's sessions and weights."""
        return Predictor(self.config, _shared=self)

    def clear_intermediate_tensor(self) -> None:
        """Drop the outputs the last run left in the handles."""
        for tensor in self._outputs.values():
            tensor._set(None)

    def try_shrink_memory(self) -> int:
        """Ask onnxruntime to return its arena's free memory after the next run."""
        self._engine.shrink_next = True
        return 0

    # Paddle's older names.
    get_input_tensor = get_input_handle
    get_output_tensor = get_output_handle

    def zero_copy_run(self) -> bool:
        return bool(self.run())


def create_predictor(config: Config) -> Predictor:
    """``paddle.inference.create_predictor``."""
    return Predictor(config)


class _OnnxEngine:
    """An ONNX model on onnxruntime sessions, with the Config's options applied."""

    def __init__(self, data: bytes, config: Config):
        ipu = config.ipu_options if config.use_ipu() else None
        data = _apply_ipu_options(data, ipu) if ipu else data
        options = ort.SessionOptions()
        if config._threads:
            options.intra_op_num_threads = config._threads
        if config._memory_optim:
            options.enable_mem_pattern = True
            options.enable_mem_reuse = True
        options.graph_optimization_level = (
            ort.GraphOptimizationLevel.ORT_ENABLE_ALL if config.ir_optim() else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        )
        if config._ir_debug:
            stem = Path(config.prog_file()).stem or "model"
            options.optimized_model_filepath = f"{stem}_optimized.onnx"
        providers = (["CUDAExecutionProvider"] if config.use_gpu() else []) + ["CPUExecutionProvider"]
        proportion = float((ipu or {}).get("ipu_available_memory_proportion", 1.0))
        if proportion < 1.0:
            _bound_arena(proportion)
            options.add_session_config_entry("session.use_env_allocators", "1")
        register_custom_ops(options, (ipu or {}).get("ipu_custom_ops_info", []))
        disabled = [name for name, on in (ipu or {}).get("ipu_custom_patterns", {}).items() if not on]
        replicas = max(1, int((ipu or {}).get("ipu_replica_num", 1)))
        try:
            self.sessions = [
                ort.InferenceSession(data, options, providers=providers, disabled_optimizers=disabled)
                for _ in range(replicas)
            ]
        except Exception as e:  # onnxruntime raises its own classes for every load failure
            raise RuntimeError(f"cannot load the model: {e}") from e
        if config._ir_debug:
            _write_dot(options.optimized_model_filepath)
        self._turn = itertools.count()
        self.steps = int(ipu["ipu_batches_per_step"]) if ipu and ipu["ipu_enable_pipelining"] else 1
        first = self.sessions[0]

        def describe(args):
            return [(a.name, _ORT_TYPES.get(a.type, np.float32),
                     [d if isinstance(d, int) else -1 for d in a.shape]) for a in args]

        self.inputs = describe(first.get_inputs())
        self.outputs = describe(first.get_outputs())
        self.shrink_next = False

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        missing = [n for n, _, _ in self.inputs if n not in feeds]
        if missing:
            raise RuntimeError(f"inputs {', '.join(missing)} have no data; copy_from_cpu() them first")
        session = self.sessions[next(self._turn) % len(self.sessions)]
        run_options = None
        if self.shrink_next:
            run_options = ort.RunOptions()
            run_options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
            self.shrink_next = False
        names = [n for n, _, _ in self.outputs]
        return dict(zip(names, run_steps(session, names, feeds, self.steps, run_options)))


def run_steps(session, names: list[str], feeds: dict[str, np.ndarray], steps: int, run_options=None) -> list:
    """Run ``feeds`` as ``steps`` micro-batches stacked on dimension 0 (pipelining), outputs stacked alike.

    Raises:
        RuntimeError: onnxruntime rejected the inputs (Paddle's error type).
    """
    try:
        if steps == 1:
            return session.run(names, feeds, run_options)
        chunks = {n: np.array_split(a, steps) for n, a in feeds.items()}
        parts = [session.run(names, {n: c[k] for n, c in chunks.items()}, run_options) for k in range(steps)]
        return [np.concatenate([p[i] for p in parts]) for i in range(len(names))]
    except Exception as e:  # onnxruntime's own error classes
        raise RuntimeError(f"the model failed to run: {e}") from e


class _ArtifactEngine:
    """A fused artifact: every subgraph's inputs are the predictor's; ``run`` runs the one whose inputs are set."""

    def __init__(self, data: bytes, config: Config):
        from ..config import RuntimeConfig

        try:
            self.runner = Runner(data, RuntimeConfig(validate_io_params=False, intra_op_num_threads=config._threads))
        except PopfuseError as e:
            raise RuntimeError(f"cannot load the artifact: {e}") from e
        anchors = {a.name: a for a in self.runner.metadata.anchors}

        def describe(names):
            return [(n, numpy_from_popef(anchors[n].tensor_info.data_type), list(anchors[n].tensor_info.shape))
                    for n in names]

        self.inputs = describe([n for s in self.runner.subgraphs for n in s.inputs])
        self.outputs = describe([n for s in self.runner.subgraphs for n in s.outputs])
        self.shrink_next = False

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if not feeds:
            raise RuntimeError("no input has data; copy_from_cpu() the inputs of one subgraph first")
        return self.runner.execute(feeds)


_ARENA_BOUND: list[int] = []


def _bound_arena(proportion: float) -> None:
    """Bound onnxruntime's CPU memory arena to ``proportion`` of this machine's memory.

    onnxruntime shares such an arena across the process and cannot replace it,
    so the first bound set holds for every later predictor that asks for one.
    """
    limit = int(proportion * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    if _ARENA_BOUND:
        if _ARENA_BOUND[0] != limit:
            log.warning("the CPU arena is already bounded at %d bytes for this process; "
                        "ipu_available_memory_proportion=%s asks for %d", _ARENA_BOUND[0], proportion, limit)
        return
    info = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
    ort.create_and_register_allocator(info, ort.OrtArenaCfg(limit, -1, -1, -1))
    _ARENA_BOUND.append(limit)


def _apply_ipu_options(data: bytes, options: dict) -> bytes:
    """Apply the IPU options that change the graph: the micro-batch size and fp16."""
    import onnx

    from fusion.passes.precision import convert_precision

    model = onnx.load_from_string(data)
    micro = int(options["ipu_micro_batch_size"])
    initializers = {t.name for t in model.graph.initializer}
    for info in model.graph.input:
        dims = info.type.tensor_type.shape.dim
        if info.name not in initializers and dims and not (dims[0].HasField("dim_value") and dims[0].dim_value > 0):
            dims[0].Clear()
            dims[0].dim_value = micro  # the micro batch fixes a dynamic batch dimension
    model = map_custom_ops(model, options["ipu_custom_ops_info"])
    if options["ipu_enable_fp16"]:
        model = convert_precision(model, "fp16")
    return model.SerializeToString()


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
