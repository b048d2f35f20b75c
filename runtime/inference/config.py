"""``Config``: Paddle Inference's configuration object, on popfuse's onnxruntime runtime.

Code written for ``paddle.inference`` runs with ``from popfuse import inference
as paddle_infer``. Model files are ``.onnx`` models, fused ``.popef``
artifacts, or with the paddle extra Paddle inference models. Each option's
effect here is in ``docs/inference.md``.
"""

from __future__ import annotations

import copy
import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..backends import SessionOptions, resolve_target
from .custom_ops import custom_op_libraries
from .ipu_config import load_ipu_config as _parse_ipu_config
from .paddle_models import PADDLE_SUFFIXES, Conversion, default_cache_dir, is_paddle_model, onnx_from_paddle
from .tensor import PrecisionType

log = logging.getLogger(__name__)

IPU_DEFAULTS: dict[str, Any] = {
    "ipu_device_num": 1,
    "ipu_micro_batch_size": 1,
    "ipu_enable_pipelining": False,
    "ipu_batches_per_step": 1,
    "ipu_enable_fp16": False,
    "ipu_replica_num": 1,
    "ipu_available_memory_proportion": 1.0,
    "ipu_enable_half_partial": False,
    "ipu_custom_ops_info": [],
    "ipu_custom_patterns": {},
    "ipu_enable_model_runtime_executor": False,
}

# Paddle's optimisation levels (0 none … 3 aggressive) on onnxruntime's.
_LEVELS = {1: "basic", 2: "extended", 3: "all"}
_MODEL_SUFFIXES = (".onnx", ".popef", *PADDLE_SUFFIXES)


class PassBuilder:
    """``config.pass_builder()``: the graph optimisations, by onnxruntime's names (e.g. ``ConstantFolding``)."""

    def __init__(self, config: Config):
        self._config = config

    def delete_pass(self, name: str) -> None:
        """Leave onnxruntime's optimisation ``name`` out."""
        self._config.delete_pass(name)

    def turn_on_debug(self) -> None:
        """``switch_ir_debug(True)``."""
        self._config.switch_ir_debug(True)

    def debug_string(self) -> str:
        deleted = ", ".join(self._config._deleted_passes) or "none"
        return f"onnxruntime graph optimisation, level {self._config._optimization_level()}; left out: {deleted}"


@dataclass(frozen=True)
class Fp16Settings:
    """How the Paddle API's fp16 is checked and fed (Paddle converts the whole graph; popfuse keeps float32
    where its measurement says so, docs/inference.md).

    Attributes:
        calibration: Representative requests: an ``.npz`` path, a mapping of input name to array, or a list
            of them; None generates one.
        strict: Creating the predictor fails when the measured error passes the tolerance (else a warning).
        low_precision_io: The float16 graph takes and returns float16; off, it takes and returns float32.
    """

    calibration: Any = None
    strict: bool = False
    low_precision_io: bool = False


class Fp16Switches:
    """The fp16 switches of ``Config`` and ``IpuStrategy``."""

    _fp16 = Fp16Settings()

    def enable_low_precision_io(self, x: bool = True) -> None:
        """Paddle's switch: under fp16, feed and fetch float16 instead of float32."""
        self._fp16 = replace(self._fp16, low_precision_io=bool(x))

    def set_fp16_calibration(self, calibration: Any) -> None:
        """popfuse's: the requests fp16 measures on (``.npz`` path, mapping of input name to array, or list)."""
        self._fp16 = replace(self._fp16, calibration=calibration)

    def enable_fp16_strict(self, x: bool = True) -> None:
        """popfuse's: fail when fp16's measured error passes the tolerance, instead of warning."""
        self._fp16 = replace(self._fp16, strict=bool(x))

    def fp16_settings(self) -> Fp16Settings:
        return self._fp16


class Config(Fp16Switches):
    """How a Predictor loads and runs a model.

    ``Config()``, ``Config(model_dir)``, ``Config(prog_file, params_file)`` and
    ``Config(other_config)`` (a copy) as in Paddle. The model is an ``.onnx``
    file, an ``executable.popef``, or a Paddle inference model; ``Config(path)``
    also takes a model file's path.
    """

    Precision = PrecisionType
    Float32, Int8, Half, Bfloat16 = (PrecisionType.Float32, PrecisionType.Int8, PrecisionType.Half,
                                     PrecisionType.Bfloat16)

    def __init__(self, *args: Any):
        """
        Raises:
            RuntimeError: ``Config(prog_file, params_file)`` and the program file does not exist (as Paddle).
            TypeError: other arguments.
        """
        if len(args) == 1 and isinstance(args[0], Config):
            self.__dict__.update(copy.deepcopy(args[0].__dict__))
            self._used = False
            return
        self._model_dir: str | None = None
        self._prog_file: str | None = None
        self._params_file: str | None = None
        self._prog_buffer: bytes | None = None
        self._use_gpu = False
        self._gpu_device_id = 0
        self._gpu_memory_mb = 100
        self._mkldnn = True
        self._threads: int | None = None
        self._memory_optim = False
        self._ir_optim = True
        self._opt_level: int | None = None
        self._ir_debug = False
        self._feed_fetch_ops = False
        self._specify_input_names = True
        self._glog_disabled = False
        self._profile = False
        self._new_ir = False
        self._openvino = False
        self._deleted_passes: list[str] = []
        self._optim_cache_dir: str | None = None
        self._shape_range_info_path: str | None = None
        self._use_ipu = False
        self.ipu_options: dict[str, Any] = copy.deepcopy(IPU_DEFAULTS)
        self._used = False
        if len(args) == 1 and isinstance(args[0], (str, os.PathLike)):
            self.set_model(args[0])
        elif len(args) == 2 and all(isinstance(a, (str, os.PathLike)) for a in args):
            if not Path(args[0]).is_file():
                raise RuntimeError(f"program file {os.fspath(args[0])!r} does not exist")
            self.set_model(*args)
        elif args:
            raise TypeError(
                "Config() takes no argument, a Config to copy, a model path, or a program file and a params file; "
                f"received {', '.join(type(a).__name__ for a in args)}"
            )

    # -- the model ----------------------------------------------------------------------------

    def set_model(self, prog_file: str | os.PathLike, params_file: str | os.PathLike | None = None) -> None:
        """``set_model(model_dir)`` or ``set_model(prog_file, params_file)``; ``model_dir`` may also be a model
        file: ``.onnx``, ``.popef``, or with the paddle extra ``.pdmodel``/``.json`` beside its ``.pdiparams``."""
        self._prog_buffer = None
        if params_file is None:
            self._model_dir, self._prog_file, self._params_file = os.fspath(prog_file), None, None
        else:
            self._model_dir, self._prog_file, self._params_file = None, os.fspath(prog_file), os.fspath(params_file)

    def set_prog_file(self, prog_file: str | os.PathLike) -> None:
        self._prog_file = os.fspath(prog_file)

    def set_params_file(self, params_file: str | os.PathLike) -> None:
        self._params_file = os.fspath(params_file)

    def set_model_buffer(self, prog_buffer: bytes, prog_size: int, params_buffer: bytes | None = None,
                         params_size: int = 0) -> None:
        """Use a model held in memory: the bytes of an ``.onnx`` model or of a ``.popef`` artifact."""
        self._prog_buffer = bytes(prog_buffer[:prog_size])
        self._model_dir = self._prog_file = self._params_file = None

    def model_dir(self) -> str:
        return self._model_dir or ""

    def prog_file(self) -> str:
        return self._prog_file or ""

    def params_file(self) -> str:
        return self._params_file or ""

    def model_label(self) -> str:
        """How messages name the model: its file or folder's name, or ``<memory>`` (popfuse's own)."""
        if self._prog_buffer is not None:
            return "<memory>"
        return Path(self._prog_file or self._model_dir or "model").name

    def model_from_memory(self) -> bool:
        return self._prog_buffer is not None

    def load_model(self) -> bytes | Conversion:
        """The model's bytes, from the buffer or the file; a Paddle model's as a Conversion to ONNX.

        Raises:
            RuntimeError: no model is set, its file does not exist, or a Paddle model does not convert
                (Paddle's error type).
        """
        if self._prog_buffer is not None:
            return self._prog_buffer
        path, params = self._model_path()
        if not path.is_file():
            raise RuntimeError(f"program file {str(path)!r} does not exist")
        if is_paddle_model(path):
            return onnx_from_paddle(path, params, self._optim_cache_dir)
        return path.read_bytes()

    def _model_path(self) -> tuple[Path, str | None]:
        if self._prog_file is not None:
            return Path(self._prog_file), self._params_file
        if self._model_dir is None:
            raise RuntimeError("no model is set: use Config(model_path) or config.set_model(path)")
        path = Path(self._model_dir)
        if path.is_dir():
            candidates = sorted(p for p in path.iterdir() if p.suffix in _MODEL_SUFFIXES)
            if len(candidates) != 1:
                found = ", ".join(p.name for p in candidates) or "none"
                raise RuntimeError(
                    f"model directory {str(path)!r} must hold one model (.onnx, .popef, .pdmodel or .json); "
                    f"found {found}. Hint: name the file with Config(prog_file, params_file)"
                )
            path = candidates[0]
        return path, None

    # -- devices and optimisation ---------------------------------------------------------------

    def enable_use_gpu(self, memory_pool_init_size_mb: int, device_id: int = 0,
                       precision_mode: PrecisionType = PrecisionType.Float32) -> None:
        """Run on GPU ``device_id`` through onnxruntime's CUDA provider; without one, log an error and stay on
        the CPU. ``precision_mode`` is recorded; use ``set_ipu_config(True)`` for float16."""
        self._gpu_memory_mb = int(memory_pool_init_size_mb)
        backend, device = resolve_target("onnxruntime-cuda")
        if device not in backend.devices():
            log.error("enable_use_gpu: this onnxruntime has no CUDA provider; running on the CPU. "
                      "Install onnxruntime-gpu to use the GPU.")
            return
        self._use_gpu, self._gpu_device_id = True, device_id

    def disable_gpu(self) -> None:
        self._use_gpu = False

    def use_gpu(self) -> bool:
        return self._use_gpu

    def gpu_device_id(self) -> int:
        return self._gpu_device_id

    def memory_pool_init_size_mb(self) -> int:
        """The GPU memory pool size given to ``enable_use_gpu`` (100 by default); onnxruntime sizes its own."""
        return self._gpu_memory_mb

    def enable_mkldnn(self) -> None:
        """On by default, as in Paddle's CPU build; onnxruntime's CPU provider always uses its own kernels (MLAS),
        so on or off changes nothing."""
        self._mkldnn = True

    def disable_mkldnn(self) -> None:
        self._mkldnn = False

    def mkldnn_enabled(self) -> bool:
        return self._mkldnn

    enable_onednn = enable_mkldnn
    disable_onednn = disable_mkldnn
    onednn_enabled = mkldnn_enabled

    def set_cpu_math_library_num_threads(self, num_threads: int) -> None:
        """onnxruntime's intra-op thread count."""
        if not isinstance(num_threads, int):
            raise TypeError(f"set_cpu_math_library_num_threads takes an int, received {type(num_threads).__name__}")
        self._threads = num_threads

    def cpu_math_library_num_threads(self) -> int:
        return self._threads or 1

    def enable_memory_optim(self, x: bool = True) -> None:
        """Reuse memory across a run's tensors (onnxruntime's memory pattern and arena)."""
        self._memory_optim = bool(x)

    def enable_memory_optim_status(self) -> bool:
        return self._memory_optim

    def switch_ir_optim(self, x: bool = True) -> None:
        """Graph optimisation on (to ``set_optimization_level``'s level, all of onnxruntime's by default) or off."""
        self._ir_optim = bool(x)

    def ir_optim(self) -> bool:
        return self._ir_optim

    def set_optimization_level(self, opt_level: int = 2) -> None:
        """0: no graph optimisation; 1, 2, 3: onnxruntime's basic, extended and all levels."""
        if opt_level not in (0, 1, 2, 3):
            raise ValueError(f"set_optimization_level takes 0, 1, 2 or 3, received {opt_level!r}")
        self._opt_level = opt_level

    def _optimization_level(self) -> str:
        if not self._ir_optim or self._opt_level == 0:
            return "none"
        return _LEVELS[self._opt_level or 3]

    def delete_pass(self, name: str) -> None:
        """Leave out onnxruntime's graph optimisation ``name`` (e.g. ``ConstantFolding``)."""
        if name not in self._deleted_passes:
            self._deleted_passes.append(name)

    def pass_builder(self) -> PassBuilder:
        return PassBuilder(self)

    def switch_ir_debug(self, x: bool = True) -> None:
        """Write the optimised graph (``<model>_optimized.onnx``) and a Graphviz ``.dot`` of it."""
        self._ir_debug = bool(x)

    def switch_use_feed_fetch_ops(self, x: bool = True) -> None:
        """Accepted and ignored, as in current Paddle: there are no feed or fetch ops."""
        self._feed_fetch_ops = bool(x)

    def use_feed_fetch_ops_enabled(self) -> bool:
        return self._feed_fetch_ops

    def switch_specify_input_names(self, x: bool = True) -> None:
        """Recorded; inputs are always fed by name."""
        self._specify_input_names = bool(x)

    def specify_input_name(self) -> bool:
        return self._specify_input_names

    def set_optim_cache_dir(self, opt_cache_dir: str | os.PathLike) -> None:
        """Where Paddle models' ONNX conversions are cached (default ``$XDG_CACHE_HOME/popfuse/paddle2onnx``)."""
        self._optim_cache_dir = os.fspath(opt_cache_dir)

    def disable_glog_info(self) -> None:
        """Log only onnxruntime's errors (its warnings too by default)."""
        self._glog_disabled = True

    def glog_info_disabled(self) -> bool:
        return self._glog_disabled

    def enable_profile(self) -> None:
        """Profile every operator of every run: onnxruntime writes ``<model>_profile_<time>.json`` (Chrome trace
        format) in the working folder when the predictor is released."""
        self._profile = True

    def enable_new_ir(self, x: bool = True) -> None:
        """Recorded; Paddle's program representations do not apply to ONNX graphs."""
        self._new_ir = bool(x)

    def new_ir_enabled(self) -> bool:
        return self._new_ir

    def enable_new_executor(self, x: bool = True) -> None:
        """Accepted; onnxruntime has one executor."""

    def enable_onnxruntime(self) -> None:
        """Accepted: popfuse always runs on onnxruntime."""

    def disable_onnxruntime(self) -> None:
        """Accepted: popfuse always runs on onnxruntime."""

    def onnxruntime_enabled(self) -> bool:
        return True

    def enable_ort_optimization(self) -> None:
        """``switch_ir_optim(True)``: onnxruntime's graph optimisation."""
        self.switch_ir_optim(True)

    def enable_openvino_engine(self, inference_precision: PrecisionType = PrecisionType.Float32) -> None:
        """Recorded, as in Paddle's CPU build; the model runs on onnxruntime's CPU provider."""
        log.warning("enable_openvino_engine: popfuse runs on onnxruntime's CPU provider")
        self._openvino = True

    def openvino_engine_enabled(self) -> bool:
        return self._openvino

    def collect_shape_range_info(self, shape_range_info_path: str | os.PathLike) -> None:
        """Record the smallest, largest and most frequent shape of each model input and output across runs, in
        Paddle's text format at ``shape_range_info_path`` (rewritten after every run)."""
        self._shape_range_info_path = os.fspath(shape_range_info_path)

    def shape_range_info_collected(self) -> bool:
        return self._shape_range_info_path is not None

    def shape_range_info_path(self) -> str:
        return self._shape_range_info_path or ""

    def enable_low_precision_io(self, x: bool = True) -> None:
        """Keep a float16 model's inputs and outputs float16.

        Raises:
            ValueError: float16 is not enabled (``set_ipu_config(True)``), as Paddle without mixed precision.
        """
        if x and not (self._use_ipu and self.ipu_options["ipu_enable_fp16"]):
            raise ValueError("enable_low_precision_io needs float16: call config.set_ipu_config(True) first")
        super().enable_low_precision_io(x)

    def enable_tensorrt_engine(self, workspace_size: int = 1 << 30, max_batch_size: int = 1,
                               min_subgraph_size: int = 3, precision_mode: Any = None,
                               use_static: bool = False, use_calib_mode: bool = False) -> None:
        """Refused with RuntimeError, as a Paddle build without TensorRT refuses it: popfuse has no TensorRT target."""
        raise RuntimeError(
            "enable_tensorrt_engine: popfuse has no TensorRT target; use enable_use_gpu() for onnxruntime's "
            "CUDA provider"
        )

    # -- the IPU options ----------------------------------------------------------------------

    def enable_ipu(self, ipu_device_num: int = 1, ipu_micro_batch_size: int = 1,
                   ipu_enable_pipelining: bool = False, ipu_batches_per_step: int = 1) -> None:
        """Paddle's IPU switch; overwrites the four values it shares with ``load_ipu_config``."""
        self._use_ipu = True
        self.ipu_options.update(
            ipu_device_num=ipu_device_num,
            ipu_micro_batch_size=ipu_micro_batch_size,
            ipu_enable_pipelining=ipu_enable_pipelining,
            ipu_batches_per_step=ipu_batches_per_step,
        )

    def set_ipu_config(self, ipu_enable_fp16: bool = False, ipu_replica_num: int = 1,
                       ipu_available_memory_proportion: float = 1.0, ipu_enable_half_partial: bool = False,
                       ipu_enable_model_runtime_executor: bool = False) -> None:
        self.ipu_options.update(
            ipu_enable_fp16=ipu_enable_fp16,
            ipu_replica_num=ipu_replica_num,
            ipu_available_memory_proportion=ipu_available_memory_proportion,
            ipu_enable_half_partial=ipu_enable_half_partial,
            ipu_enable_model_runtime_executor=ipu_enable_model_runtime_executor,
        )

    def set_ipu_custom_info(self, ipu_custom_ops_info: list | None = None,
                            ipu_custom_patterns: dict | None = None) -> None:
        self.ipu_options.update(
            ipu_custom_ops_info=list(ipu_custom_ops_info or []),
            ipu_custom_patterns=dict(ipu_custom_patterns or {}),
        )

    def load_ipu_config(self, config_path: str | os.PathLike) -> None:
        """Read Paddle's IPU configuration file (RuntimeError if missing, ValueError if malformed)."""
        self.ipu_options.update(_parse_ipu_config(config_path))
        self._use_ipu = True

    def use_ipu(self) -> bool:
        return self._use_ipu

    # -- reporting ----------------------------------------------------------------------------

    def summary(self) -> str:
        """The settings as a two-column table, as Paddle prints it."""
        rows = [
            ("model_dir", self._model_dir or ""),
            ("model_file", self._prog_file or ("<memory>" if self._prog_buffer is not None else "")),
            ("params_file", self._params_file or ""),
            ("use_gpu", self._use_gpu),
            ("gpu_device_id", self._gpu_device_id),
            ("mkldnn", self._mkldnn),
            ("cpu_math_thread", self._threads or "default"),
            ("enable_memory_optim", self._memory_optim),
            ("ir_optim", self._ir_optim),
            ("optimization_level", self._optimization_level()),
            ("deleted_passes", ", ".join(self._deleted_passes)),
            ("ir_debug", self._ir_debug),
            ("use_feed_fetch_ops", self._feed_fetch_ops),
            ("enable_profile", self._profile),
            ("glog_info_disabled", self._glog_disabled),
            ("optim_cache_dir", self._optim_cache_dir or str(default_cache_dir())),
            ("shape_range_info_path", self._shape_range_info_path or ""),
            ("low_precision_io", self.fp16_settings().low_precision_io),
            ("use_ipu", self._use_ipu),
            *((k, v) for k, v in self.ipu_options.items()),
        ]
        width = max(len(k) for k, _ in rows)
        line = "+" + "-" * (width + 2) + "+" + "-" * 42 + "+"
        body = [f"| {k:<{width}} | {v!s:<40} |" for k, v in rows]
        return "\n".join([line, f"| {'Option':<{width}} | {'Value':<40} |", line, *body, line])

    def session_options(self) -> SessionOptions:
        """How a predictor opens this config's sessions (popfuse's own; Paddle has no such method)."""
        ipu = self.ipu_options if self._use_ipu else {}
        proportion = float(ipu.get("ipu_available_memory_proportion", 1.0))
        limit = None
        if proportion < 1.0:
            limit = int(proportion * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
        stem = self._stem()
        level = self._optimization_level()
        patterns = tuple(name for name, on in ipu.get("ipu_custom_patterns", {}).items() if not on)
        return SessionOptions(
            intra_op_num_threads=self._threads,
            optimize=level != "none",
            optimization_level="all" if level == "none" else level,
            optimized_model_path=f"{stem}_optimized.onnx" if self._ir_debug else None,
            disabled_optimizers=tuple(dict.fromkeys(patterns + tuple(self._deleted_passes))),
            custom_op_libraries=custom_op_libraries(ipu.get("ipu_custom_ops_info", [])),
            memory_limit_bytes=limit,
            device_id=self._gpu_device_id,
            # Paddle logs its warnings unless told not to (disable_glog_info): so does its onnxruntime here.
            log_severity_level=3 if self._glog_disabled else 2,
            profile_prefix=f"{stem}_profile" if self._profile else None,
        )

    def _stem(self) -> str:
        return Path(self._prog_file or self._model_dir or "model").stem or "model"

    def _claim(self) -> None:
        if self._used:
            raise ValueError("Note: Each config can only be used for one predictor.")
        self._used = True
