"""The onnxruntime backend: CPU by default, CUDA where onnxruntime-gpu has it."""

from __future__ import annotations

import functools
import os
import platform
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state as ort_state

from ..errors import BackendError
from .base import Backend, Session, SessionOptions, Weight

_PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}

# The CPU kernels that prepack a 2-D constant weight into MLAS's GEMM layout when a
# session opens, and then read only their packed copy: (domain, op type) -> input index.
_PREPACKED_BY_CPU = {("", "MatMul"): 1, ("com.microsoft", "FusedMatMul"): 1, ("", "Gemm"): 1}

# CPU features that change what onnxruntime's full optimisation writes (the NCHWc
# block size and its kernels follow the widest vector unit).
_CPU_FLAGS = ("avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "amx_tile", "asimd", "sve")


@functools.cache
def _cpu_flags() -> tuple[str, ...]:
    """The flags of ``_CPU_FLAGS`` this CPU has; read once, as every Runner checks them."""
    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                flags.update(line.split(":", 1)[1].split())
    except OSError:
        pass  # not Linux: the machine name alone identifies the build
    return tuple(f for f in _CPU_FLAGS if f in flags)


class OnnxRuntimeBackend(Backend):
    """Compiles with onnxruntime's full offline optimisation; opens with none left to do.

    Compiling at the highest level applies the machine-specific layout rewrites
    (NCHWc convolutions) once, at build time, so opening skips every graph
    optimisation. The artifact records the CPU features the rewrites depend on,
    and the runner refuses an artifact compiled for other ones.
    """

    name = "onnxruntime"
    run_errors = (
        ort_state.Fail,
        ort_state.InvalidArgument,
        ort_state.RuntimeException,
        ort_state.InvalidGraph,
        ort_state.NotImplemented,
    )

    def version(self) -> str:
        return ort.__version__

    def features(self, device: str) -> str:
        return " ".join([device, platform.machine(), *_cpu_flags()])

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
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            options.optimized_model_filepath = os.fspath(out)
            # onnxruntime warns that a fully optimised model is specific to this machine;
            # the artifact records the CPU features and the runner checks them, so the
            # warning would only repeat what the design already handles.
            options.log_severity_level = 3
            try:
                ort.InferenceSession(model, options, providers=providers)
            except (*self.run_errors, ort_state.InvalidProtobuf) as e:
                raise BackendError(f"onnxruntime could not compile the fused graph: {e}") from e
            return out.read_bytes()

    def copies_at_load(self, domain: str, op_type: str, input_index: int, rank: int, device: str) -> bool:
        if device != "cpu":
            return True  # every weight is copied to the device's memory
        return rank == 2 and _PREPACKED_BY_CPU.get((domain, op_type)) == input_index

    def open(
        self,
        executable: bytes | memoryview,
        weights: Sequence[Weight],
        device: str,
        options: SessionOptions,
    ) -> Session:
        providers = self._providers(device)
        so = ort.SessionOptions()
        # The executable was optimised when it was compiled; there is nothing left to do.
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        if options.intra_op_num_threads is not None:
            so.intra_op_num_threads = options.intra_op_num_threads
        # Each weight is given as an initializer over the caller's memory, in the main graph
        # and in the If branches alike, so onnxruntime neither reads nor copies it: a branch
        # initializer read from the model is held twice or more.
        values = [ort.OrtValue.ortvalue_from_numpy(w.data) for w in weights]
        for weight, value in zip(weights, values):
            so.add_initializer(weight.name, value)
        try:
            with tempfile.TemporaryDirectory(prefix="popfuse-open-") as folder:
                # onnxruntime checks that the file each external tensor names exists, though
                # every one is supplied above and none is read: empty stand-ins satisfy the check
                # (were one read, it would fail loudly: it holds no data).
                for location in {w.location for w in weights}:
                    _placeholder(Path(folder), location)
                so.add_session_config_entry("session.model_external_initializers_file_folder_path", folder)
                session = ort.InferenceSession(bytes(executable), so, providers=providers)
        except (*self.run_errors, ort_state.InvalidProtobuf) as e:
            raise BackendError(f"onnxruntime could not load the executable: {e}") from e
        return _Session(session, (weights, values))


class _Session:
    """An onnxruntime session, and the weights whose memory it uses in place."""

    def __init__(self, session: ort.InferenceSession, keep: object):
        # The engine's own run, below InferenceSession.run: that wrapper checks the feed names
        # against the graph on every call (~4 us), which the runner has already done.
        self._run = session._sess.run
        self._session = session
        self._keep = keep

    def run(self, output_names: Sequence[str], feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        return self._run(output_names, feeds, None)


def _placeholder(folder: Path, location: str) -> None:
    if Path(location).name != location or location in ("", ".", ".."):
        raise BackendError(f"the executable names external data at {location!r}; expected a tensor blob's name")
    (folder / location).touch()
