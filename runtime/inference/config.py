"""``Config``: Paddle Inference's configuration object, on popfuse's onnxruntime runtime.

Code written for ``paddle.inference`` runs with ``from popfuse import inference
as paddle_infer``. Model files are ``.onnx`` models or fused ``.popef``
artifacts. Each option's effect here is in ``docs/inference.md``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..backends import SessionOptions, resolve_target
from .custom_ops import custom_op_libraries
from .ipu_config import load_ipu_config as _parse_ipu_config
from .paddle_models import is_paddle_model, onnx_from_paddle

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

    ``Config()``, ``Config(model_path)`` and ``Config(prog_file, params_file)``
    as in Paddle; the model is an ``.onnx`` file or an ``executable.popef``.
    """

    def __init__(self, prog_file: str | os.PathLike | None = None, params_file: str | os.PathLike | None = None):
        self._prog_file: str | None = None
        self._params_file: str | None = None
        self._prog_buffer: bytes | None = None
        self._use_gpu = False
        self._gpu_device_id = 0
        self._mkldnn = False
        self._threads: int | None = None
        self._memory_optim = False
        self._ir_optim = True
        self._ir_debug = False
        self._feed_fetch_ops = False
        self._use_ipu = False
        self.ipu_options: dict[str, Any] = dict(IPU_DEFAULTS)
        self._used = False
        if prog_file is not None:
            self.set_model(prog_file, params_file)

    # -- the model ----------------------------------------------------------------------------

    def set_model(self, prog_file: str | os.PathLike, params_file: str | os.PathLike | None = None) -> None:
        """Use the model at ``prog_file``: ``.onnx``, ``.popef``, or with the paddle extra a Paddle
        inference model (``.pdmodel``/``.json``, weights in ``params_file``)."""
        self._prog_file = os.fspath(prog_file)
        self._params_file = None if params_file is None else os.fspath(params_file)
        self._prog_buffer = None

    def set_model_buffer(self, prog_buffer: bytes, prog_size: int, params_buffer: bytes | None = None,
                         params_size: int = 0) -> None:
        """Use a model held in memory: the bytes of an ``.onnx`` model or of a ``.popef`` artifact."""
        self._prog_buffer = bytes(prog_buffer[:prog_size])
        self._prog_file = self._params_file = None

    def prog_file(self) -> str:
        return self._prog_file or ""

    def params_file(self) -> str:
        return self._params_file or ""

    def model_from_memory(self) -> bool:
        return self._prog_buffer is not None

    def model_bytes(self) -> bytes:
        """The model's bytes, from the buffer or the file.

        Raises:
            RuntimeError: no model is set, or its file does not exist (Paddle's error type).
        """
        if self._prog_buffer is not None:
            return self._prog_buffer
        if self._prog_file is None:
            raise RuntimeError("no model is set: use Config(model_path) or config.set_model(path)")
        path = Path(self._prog_file)
        if path.is_dir():
            candidates = sorted(path.glob("*.onnx")) + sorted(path.glob("*.popef"))
            if not candidates:
                raise RuntimeError(f"model directory {str(path)!r} holds no .onnx model or .popef artifact")
            path = candidates[0]
        if not path.is_file():
            raise RuntimeError(f"program file {str(path)!r} does not exist")
        if is_paddle_model(path):
            return onnx_from_paddle(path, self._params_file)
        return path.read_bytes()

    # -- devices and optimisation ---------------------------------------------------------------

    def enable_use_gpu(self, memory_pool_init_size_mb: int, device_id: int = 0) -> None:
        """Run on GPU ``device_id`` through onnxruntime's CUDA provider; without one, log an error and stay on
        the CPU."""
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

    def enable_mkldnn(self) -> None:
        """Accepted; onnxruntime's CPU provider already uses its own optimised kernels (MLAS)."""
        self._mkldnn = True

    def mkldnn_enabled(self) -> bool:
        return self._mkldnn

    def set_cpu_math_library_num_threads(self, num_threads: int) -> None:
        """onnxruntime's intra-op thread count."""
        self._threads = int(num_threads)

    def cpu_math_library_num_threads(self) -> int:
        return self._threads or 1

    def enable_memory_optim(self, x: bool = True) -> None:
        """Reuse memory across a run's tensors (onnxruntime's memory pattern and arena)."""
        self._memory_optim = bool(x)

    def enable_memory_optim_status(self) -> bool:
        return self._memory_optim

    def switch_ir_optim(self, x: bool = True) -> None:
        """Graph optimisation on (all of onnxruntime's levels) or off."""
        self._ir_optim = bool(x)

    def ir_optim(self) -> bool:
        return self._ir_optim

    def switch_ir_debug(self, x: bool = True) -> None:
        """Write the optimised graph (``<model>_optimized.onnx``) and a Graphviz ``.dot`` of it."""
        self._ir_debug = bool(x)

    def switch_use_feed_fetch_ops(self, x: bool = True) -> None:
        """Accepted and ignored, as in current Paddle: there are no feed or fetch ops."""
        self._feed_fetch_ops = bool(x)

    def use_feed_fetch_ops_enabled(self) -> bool:
        return self._feed_fetch_ops

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
                       ipu_available_memory_proportion: float = 1.0, ipu_enable_half_partial: bool = False) -> None:
        self.ipu_options.update(
            ipu_enable_fp16=ipu_enable_fp16,
            ipu_replica_num=ipu_replica_num,
            ipu_available_memory_proportion=ipu_available_memory_proportion,
            ipu_enable_half_partial=ipu_enable_half_partial,
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
            ("model", self._prog_file or ("<memory>" if self._prog_buffer is not None else "")),
            ("params", self._params_file or ""),
            ("use_gpu", self._use_gpu),
            ("gpu_device_id", self._gpu_device_id),
            ("mkldnn", self._mkldnn),
            ("cpu_math_thread", self._threads or "default"),
            ("enable_memory_optim", self._memory_optim),
            ("ir_optim", self._ir_optim),
            ("ir_debug", self._ir_debug),
            ("use_feed_fetch_ops", self._feed_fetch_ops),
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
        stem = Path(self.prog_file()).stem or "model"
        return SessionOptions(
            intra_op_num_threads=self._threads,
            optimize=self._ir_optim,
            optimized_model_path=f"{stem}_optimized.onnx" if self._ir_debug else None,
            disabled_optimizers=tuple(name for name, on in ipu.get("ipu_custom_patterns", {}).items() if not on),
            custom_op_libraries=custom_op_libraries(ipu.get("ipu_custom_ops_info", [])),
            memory_limit_bytes=limit,
            device_id=self._gpu_device_id,
        )

    def _claim(self) -> None:
        if self._used:
            raise ValueError("Note: Each config can only be used for one predictor.")
        self._used = True
