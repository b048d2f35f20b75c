"""The onnxruntime backend: CPU by default, CUDA where onnxruntime-gpu has it."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state as ort_state

from ..errors import BackendError
from .base import Backend, Session, SessionOptions

_PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}

# Offline optimisation stops at the extended level: those rewrites are portable
# across CPUs of one architecture, while the layout-level ones (NCHWc) depend on
# the machine and are applied when the executable is opened instead.
_COMPILE_LEVEL = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED


class OnnxRuntimeBackend(Backend):
    """Compiles with onnxruntime's offline graph optimiser; runs with InferenceSession."""

    name = "onnxruntime"
    run_errors = (ort_state.Fail, ort_state.InvalidArgument, ort_state.RuntimeException,
                  ort_state.InvalidGraph, ort_state.NotImplemented)

    def version(self) -> str:
        return ort.__version__

    def devices(self) -> list[str]:
        available = set(ort.get_available_providers())
        return [device for device, provider in _PROVIDERS.items() if provider in available]

    def _providers(self, device: str) -> list[str]:
        if device not in _PROVIDERS:
            raise BackendError(f"onnxruntime has no device {device!r}; expected one of {sorted(_PROVIDERS)}")
        if device not in self.devices():
            raise BackendError(
                f"onnxruntime {ort.__version__} here has no {_PROVIDERS[device]}; "
                f"available devices: {self.devices()}. Hint: install onnxruntime-gpu for CUDA."
            )
        return [_PROVIDERS[device]] + (["CPUExecutionProvider"] if device != "cpu" else [])

    def compile(self, model: bytes, device: str) -> bytes:
        providers = self._providers(device)
        with tempfile.TemporaryDirectory(prefix="popfuse-compile-") as tmp:
            out = Path(tmp) / "executable.onnx"
            options = ort.SessionOptions()
            options.graph_optimization_level = _COMPILE_LEVEL
            options.optimized_model_filepath = os.fspath(out)
            try:
                ort.InferenceSession(model, options, providers=providers)
            except (*self.run_errors, ort_state.InvalidProtobuf) as e:
                raise BackendError(f"onnxruntime could not compile the fused graph: {e}") from e
            return out.read_bytes()

    def open(self, executable: bytes | memoryview, device: str, options: SessionOptions) -> Session:
        providers = self._providers(device)
        so = ort.SessionOptions()
        if options.intra_op_num_threads is not None:
            so.intra_op_num_threads = options.intra_op_num_threads
        try:
            return ort.InferenceSession(bytes(executable), so, providers=providers)
        except (*self.run_errors, ort_state.InvalidProtobuf) as e:
            raise BackendError(f"onnxruntime could not load the executable: {e}") from e
