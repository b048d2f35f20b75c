"""The onnxruntime backend: CPU by default, CUDA where onnxruntime-gpu has it."""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import re
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state as ort_state

from ..atomic import write_atomic
from ..dtypes import numpy_from_type_string
from ..errors import BackendError, ExecutionError
from .base import ENGINE_LOGS, Backend, Port, Session, SessionOptions, Weight

log = logging.getLogger(__name__)

_PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}

# The CPU kernels that prepack a 2-D constant weight into MLAS's GEMM layout when a
# session opens, and then read only their packed copy: (domain, op type) -> input index.
_PREPACKED_BY_CPU = {("", "MatMul"): 1, ("com.microsoft", "FusedMatMul"): 1, ("", "Gemm"): 1}

@functools.cache
def _cpu_flags() -> tuple[str, ...]:
    """Every feature flag this CPU reports, sorted; read once. They name an executable cache entry: what
    onnxruntime's full optimisation writes follows the CPU (the NCHWc block follows the widest vector unit,
    int8 and fp16 layouts other units), and two hosts that share a cache folder must not share entries.

    Both views are kept: the kernel's (/proc/cpuinfo) and what CPUID tells this process, as numpy and
    onnxruntime's MLAS each ask it at start. They differ under emulators (valgrind, qemu-user, Intel's SDE),
    where an entry written natively with 16-wide NCHWc blocks would otherwise meet kernels of 8.
    """
    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                flags.update(line.split(":", 1)[1].split())
    except OSError:
        pass  # not Linux: the machine name alone identifies the build
    return tuple(sorted(flags)) + tuple(f"cpuid:{name}" for name in _cpuid_features())


def _cpuid_features() -> list[str]:
    """The CPU features numpy found through CPUID at import (with the OS's support for their registers), sorted."""
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as features
    except ImportError:  # numpy 1.x
        from numpy.core._multiarray_umath import __cpu_features__ as features
    return sorted(name for name, present in features.items() if present)


class OnnxRuntimeBackend(Backend):
    """Compiles with every onnxruntime optimisation that holds on any CPU; opens adding this CPU's layout.

    Compiling at the extended level fuses and folds once, at build time, and leaves out
    the layout rewrites that depend on the CPU's vector width (NCHWc convolutions, whose
    weights are padded to its block): an artifact opens on any machine of its
    architecture, and holds each weight at its own size. Opening it at the highest
    level adds those rewrites for this CPU; the executable cache keeps the result, so
    that only an artifact's first load on a machine pays for them.
    """

    name = "onnxruntime"

    def version(self) -> str:
        return ort.__version__

    def features(self, device: str) -> str:
        return f"{device} {platform.machine()}"

    def devices(self) -> list[str]:
        available = set(ort.get_available_providers())
        return [device for device, provider in _PROVIDERS.items() if provider in available]

    def _providers(self, device: str, device_id: int = 0) -> list:
        if device not in _PROVIDERS:
            raise BackendError(f"onnxruntime has no device {device!r}; expected one of {sorted(_PROVIDERS)}")
        if device not in self.devices():
            raise BackendError(
                f"onnxruntime {ort.__version__} here has no {_PROVIDERS[device]}; "
                f"available devices: {self.devices()}. Hint: install onnxruntime-gpu for CUDA."
            )
        if device == "cpu":
            return ["CPUExecutionProvider"]
        return [(_PROVIDERS[device], {"device_id": device_id}), "CPUExecutionProvider"]

    def compile(self, model: bytes, device: str) -> bytes:
        providers = self._providers(device)
        with tempfile.TemporaryDirectory(prefix="popfuse-compile-") as tmp:
            out = Path(tmp) / "executable.onnx"
            options = ort.SessionOptions()
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
            options.optimized_model_filepath = os.fspath(out)
            options.log_severity_level = max(_log_severity(), _ERROR)
            try:
                ort.InferenceSession(model, options, providers=providers)
            except _LOAD_ERRORS as e:
                raise BackendError(f"onnxruntime could not compile the fused graph: {e}") from e
            return out.read_bytes()

    def copies_at_load(self, domain: str, op_type: str, input_index: int, rank: int, device: str) -> bool:
        if device != "cpu":
            return True  # every weight is copied to the device's memory
        return rank == 2 and _PREPACKED_BY_CPU.get((domain, op_type)) == input_index

    def open(
        self,
        model: bytes | memoryview,
        weights: Sequence[Weight],
        device: str,
        options: SessionOptions,
    ) -> Session:
        providers = self._providers(device, options.device_id)
        so = ort.SessionOptions()
        so.log_severity_level = _log_severity(options.log_severity_level)
        if options.executable:  # what compile left to the machine: on the CPU, the layout for its vector width
            level = _LEVELS["all" if device == "cpu" else None]
        else:
            level = _LEVELS[options.optimization_level] if options.optimize else _LEVELS[None]
        so.graph_optimization_level = level
        if options.intra_op_num_threads is not None:
            so.intra_op_num_threads = options.intra_op_num_threads
        if options.optimized_model_path is not None:
            so.optimized_model_filepath = options.optimized_model_path
        for library in options.custom_op_libraries:
            so.register_custom_ops_library(library)
        if options.profile_prefix is not None:
            so.enable_profiling = True
            so.profile_file_prefix = options.profile_prefix
        if options.memory_limit_bytes is not None:
            _bound_arena(options.memory_limit_bytes)
            so.add_session_config_entry("session.use_env_allocators", "1")
        # A custom-op library's ops would have to be registered to write an entry, and its build is no part of
        # the entry's name: such a model opens without the cache.
        if options.cache_dir and options.cache_key and device == "cpu" and not options.custom_op_libraries:
            machine = " ".join([self.features(device), *_cpu_flags()])
            cached = _cached_executable(model, weights, level, options, machine)
            if cached is not None:
                # onnxruntime maps the file, and its weights stay there, used in place: processes that open the
                # same entry share its pages.
                # (Both entries concern ORT-format models only: should the entry fail, the ONNX model opened
                # below ignores them.)
                so.add_session_config_entry("session.use_memory_mapped_ort_model", "1")
                so.add_session_config_entry("session.use_ort_model_bytes_for_initializers", "1")
                so.graph_optimization_level = _LEVELS[None]  # done when the entry was written
                try:
                    session = _open_session(os.fspath(cached), so, providers, options, keep=cached)
                    # Loading read the whole file, but a run reads only the weights its kernels did not pack
                    # into memory of their own: the other pages need not stay in this process.
                    _release_mapped_pages(cached)
                    return session
                except BackendError as e:
                    # An entry that matches its checksum but that onnxruntime refuses (written by a hand other
                    # than the cache's): removed, and the executable opened as it is.
                    log.warning("the executable cache entry %s cannot be opened (%s); removed, opening the "
                                "executable without it", cached, e)
                    cached.unlink(missing_ok=True)
                    so.graph_optimization_level = level
        # Each weight is given as an initializer over the caller's memory, in the main graph
        # and in the If branches alike, so onnxruntime neither reads nor copies it: a branch
        # initializer read from the model is held twice or more.
        values = [ort.OrtValue.ortvalue_from_numpy(w.data) for w in weights]
        for weight, value in zip(weights, values):
            so.add_initializer(weight.name, value)
        optimizing = level != _LEVELS[None]
        try:
            with tempfile.TemporaryDirectory(prefix="popfuse-open-") as folder:
                # onnxruntime checks that the file each external tensor names exists, though every one is
                # supplied above: with no optimisation to do none is read, and empty stand-ins satisfy the check
                # (were one read, it would fail loudly: it holds no data). Optimising reads the weights it
                # rewrites from their files: then every weight is written there.
                _external_files(Path(folder), weights, filled=optimizing)
                so.add_session_config_entry("session.model_external_initializers_file_folder_path", folder)
                session = _open_session(bytes(model), so, providers, options, keep=(weights, values))
        except OSError as e:
            raise BackendError(f"cannot write the executable's weights to a temporary folder ({e.strerror or e}); "
                               "set TMPDIR to a folder with room, or give RuntimeConfig an executable_cache") from e
        if optimizing:
            _trim_heap()  # what optimising freed, as after writing a cache entry
        return session


def _open_session(model: bytes | str, so: ort.SessionOptions, providers: list, options: SessionOptions,
                  keep: object) -> _Session:
    """A session of ``model`` (its bytes, or the path of an ORT-format file), as popfuse opens every one."""
    try:
        # No fallback: on a failure onnxruntime would print "EP Error" banners to stdout and load the
        # same model again with the same providers (the only ones we ask for).
        session = ort.InferenceSession(
            model, so, providers=providers, disabled_optimizers=list(options.disabled_optimizers), enable_fallback=0
        )
    except (*_LOAD_ERRORS, RuntimeError, ValueError) as e:
        # onnxruntime also raises a bare RuntimeError, and a UnicodeDecodeError for a message quoting
        # a graph's undecodable bytes: a model it cannot load, whatever the class.
        raise BackendError(f"onnxruntime could not load the model: {e}") from e
    return _Session(session, keep)


# The executable cache: an executable in onnxruntime's own ORT format, which it maps from the file and
# reads its weights from in place (docs/runtime.md, "The executable cache"). Bump when what is cached changes.
_CACHE_FORMAT = "2"


def _cached_executable(model: bytes | memoryview, weights: Sequence[Weight], level: ort.GraphOptimizationLevel,
                       options: SessionOptions, machine: str) -> Path | None:
    """The cache entry of ``model``, optimised at ``level``, made first if it is missing or does not match its
    checksum; None when the cache folder cannot be used (the caller opens the model as it is)."""
    recipe = " ".join([options.cache_key, level.name, *options.disabled_optimizers])
    entry = cache_entry(options.cache_dir, recipe, ort.__version__, machine)
    checksum = entry.with_suffix(".sha256")
    try:
        if entry.is_file() and checksum.is_file() and checksum.read_text().strip() == _file_sha256(entry):
            return entry
        _write_ort_format(model, weights, level, options.disabled_optimizers, entry, checksum)
        # Optimising the graph freed more heap than the open session keeps, which the C library would
        # otherwise hold in this process for its whole life.
        _trim_heap()
        return entry
    except OSError as e:
        log.warning("the executable cache %s cannot be used (%s); opening the executable without it",
                    options.cache_dir, e.strerror or e)
        return None


def _release_mapped_pages(path: Path) -> None:
    """Drop from this process the resident pages of every mapping of ``path`` (onnxruntime's own, which Python
    cannot reach otherwise); a page read again comes back from the page cache on first touch (Linux)."""
    name = " " + os.path.realpath(path)  # as the kernel names it
    try:
        with open("/proc/self/maps") as maps:
            ranges = [line.split()[0] for line in maps if line.rstrip("\n").endswith(name)]
        madvise = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):
        return  # not Linux: the pages stay, as they would anyway
    for extent in ranges:
        start, end = (int(bound, 16) for bound in extent.split("-"))
        madvise(ctypes.c_void_p(start), ctypes.c_size_t(end - start), _MADV_DONTNEED)


_MADV_DONTNEED = 4  # Linux's value (mmap.MADV_DONTNEED applies to Python's own maps only)


def cache_entry(cache_dir: str, cache_key: str, version: str, features: str) -> Path:
    """Where the cache keeps an executable: named by its contents, onnxruntime's version and the machine's
    features, so that an entry another version or machine wrote is never opened."""
    key = hashlib.sha256("\0".join((_CACHE_FORMAT, cache_key, version, features)).encode())
    return Path(cache_dir) / f"{key.hexdigest()}.ort"


def _trim_heap() -> None:
    """Return the C heap's free pages to the system (glibc's ``malloc_trim``; elsewhere nothing)."""
    try:
        ctypes.CDLL(None).malloc_trim(ctypes.c_size_t(0))
    except (OSError, AttributeError):
        pass


def _write_ort_format(model: bytes | memoryview, weights: Sequence[Weight], level: ort.GraphOptimizationLevel,
                      disabled: Sequence[str], entry: Path, checksum: Path) -> None:
    """Save ``model``, optimised at ``level`` but for the ``disabled`` optimisers, in the ORT format, its weights
    inside, at ``entry`` (atomically), and its SHA-256."""
    entry.parent.mkdir(parents=True, exist_ok=True)
    so = ort.SessionOptions()
    so.graph_optimization_level = level
    so.log_severity_level = max(_log_severity(), _ERROR)
    so.add_session_config_entry("session.save_model_format", "ORT")
    with tempfile.TemporaryDirectory(prefix="popfuse-cache-", dir=entry.parent) as folder:
        _external_files(Path(folder), weights, filled=True)  # saving reads every weight from its file
        so.add_session_config_entry("session.model_external_initializers_file_folder_path", folder)
        written = Path(folder) / "executable.ort"
        so.optimized_model_filepath = os.fspath(written)
        try:
            ort.InferenceSession(bytes(model), so, providers=["CPUExecutionProvider"],
                                 disabled_optimizers=list(disabled), enable_fallback=0)
        except (*_LOAD_ERRORS, RuntimeError, ValueError) as e:
            raise BackendError(f"onnxruntime could not prepare the executable cache: {e}") from e
        digest = _file_sha256(written)
        os.replace(written, entry)
    write_atomic(checksum, digest.encode())


def _file_sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()  # reads into one buffer, hashes without the GIL


# onnxruntime's log severities.
_WARNING, _ERROR, _FATAL = 2, 3, 4


def _log_severity(asked: int | None = None) -> int:
    """What a session asked for; else warnings and errors when engine logs are shown, otherwise only what
    precedes a crash."""
    severity = asked if asked is not None else _WARNING if ENGINE_LOGS.shown else _FATAL
    ort.set_default_logger_severity(severity)  # the process-wide logger, which some messages bypass sessions for
    return severity



_LEVELS = {
    None: ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}
# What onnxruntime raises when it cannot create a session.
_LOAD_ERRORS = (
    ort_state.Fail, ort_state.InvalidArgument, ort_state.RuntimeException, ort_state.InvalidGraph,
    ort_state.NotImplemented, ort_state.InvalidProtobuf, ort_state.NoSuchFile, ort_state.EPFail, ort_state.EngineError,
)
# A node that fails on the data it is given ("... while running Conv node. Name:'…' Status Message: …"),
# nested once per If around it: the request's values or sizes, not the engine, are at fault.
_NODE_FAILURE = re.compile(r"while running (\w+) node\. Name:'[^']*' Status Message: ")
# The source location and function an onnxruntime check names before saying what failed.
_SOURCE_PREFIX = re.compile(r"^/\S+:\d+ .*? was false\. ", re.S)


def _run_error(e: Exception) -> Exception:
    """onnxruntime's error from a run as ExecutionError (the request's inputs are refused) or BackendError."""
    text = str(e)
    failures = list(_NODE_FAILURE.finditer(text))
    refused = isinstance(e, ort_state.InvalidArgument) or (
        failures and isinstance(e, (ort_state.Fail, ort_state.RuntimeException)) and "allocate" not in text.lower())
    if not refused:
        return BackendError(text)
    if not failures:
        return ExecutionError(text.split(" : ", 3)[-1])
    # Node names are the compiler's, not the user's (the dispatch If around every model among them): say
    # which operator refused, innermost first, and why, without onnxruntime's source location.
    innermost = failures[-1]
    reason = _SOURCE_PREFIX.sub("", text[innermost.end():].strip())
    operator = innermost.group(1)
    article = "an" if operator[0] in "AEIOU" else "a"
    return ExecutionError(f"{article} {operator} operator cannot run on these inputs: {reason}")


class _Session:
    """An onnxruntime session, and the weights whose memory it uses in place."""

    def __init__(self, session: ort.InferenceSession, keep: object):
        # The engine's own run, below InferenceSession.run: that wrapper checks the feed names
        # against the graph on every call (~4 us), which the runner has already done.
        self._run = session._sess.run
        self._session = session
        self._keep = keep
        self._quiet = _quiet_run_options()
        self.inputs = tuple(_port(a) for a in session.get_inputs())
        self.outputs = tuple(_port(a) for a in session.get_outputs())

    def run(
        self, output_names: Sequence[str], feeds: Mapping[str, np.ndarray], shrink_memory: bool = False
    ) -> list[np.ndarray]:
        options = self._quiet
        if shrink_memory:
            options = _quiet_run_options()
            options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
        try:
            return self._run(output_names, feeds, options)
        except _LOAD_ERRORS as e:
            raise _run_error(e) from e


def _quiet_run_options() -> ort.RunOptions:
    """Run options under which a failed run raises and prints nothing unless the engine's logs are shown:
    onnxruntime would otherwise log each failing node (every If around it too) in red on stderr, which a
    server's refused requests would fill."""
    options = ort.RunOptions()
    options.log_severity_level = _WARNING if ENGINE_LOGS.shown else _FATAL
    return options


def _port(arg: ort.NodeArg) -> Port:
    shape = tuple(d if isinstance(d, int) and d >= 0 else -1 for d in (arg.shape or ()))
    return Port(arg.name, numpy_from_type_string(arg.type), shape)

_ARENA_BOUND: list[int] = []


def _bound_arena(limit: int) -> None:
    """Bound onnxruntime's CPU memory arena to ``limit`` bytes.

    onnxruntime shares such an arena across the process and cannot replace it,
    so the first bound set holds for every later session that asks for one.
    """
    if _ARENA_BOUND:
        if _ARENA_BOUND[0] != limit:
            log.warning("the CPU arena is already bounded at %d bytes for this process; a session asked for %d",
                        _ARENA_BOUND[0], limit)
        return
    info = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
    ort.create_and_register_allocator(info, ort.OrtArenaCfg(limit, -1, -1, -1))
    _ARENA_BOUND.append(limit)


def _external_files(folder: Path, weights: Sequence[Weight], filled: bool) -> None:
    """In ``folder``, the file each weight's location names: empty, or with each weight at its offset."""
    for location in {w.location for w in weights}:
        if Path(location).name != location or location in ("", ".", ".."):
            raise BackendError(f"the executable names external data at {location!r}; expected a tensor blob's name")
        (folder / location).touch()
    if filled:
        for w in weights:
            with open(folder / w.location, "r+b") as f:
                f.seek(w.offset)
                f.write(memoryview(w.data).cast("B"))
