"""The onnxruntime backend: targets, sessions over plain models and executables, and how run errors split."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import onnx
import pytest

from popfuse.runtime.backends import SessionOptions, resolve_target, show_engine_logs, targets
from popfuse.runtime.backends.onnxruntime import OnnxRuntimeBackend, cache_entry
from popfuse.runtime.errors import BackendError, ExecutionError
from tests.models import dynamic_model, parse, ppocr_input, ppocr_path, scale_model


def open_plain(model: onnx.ModelProto, **options):
    backend, device = resolve_target("onnxruntime-cpu")
    return backend.open(model.SerializeToString(), (), device, SessionOptions(**options))


def test_targets_resolve_lazily_and_the_ipu_gets_a_hint():
    assert targets() == ["onnxruntime-cpu", "onnxruntime-cuda"]
    backend, device = resolve_target("onnxruntime-cpu")
    assert backend.name == "onnxruntime" and device == "cpu" and "cpu" in backend.devices()
    with pytest.raises(BackendError, match="Poplar SDK"):
        resolve_target("ipu21")
    with pytest.raises(BackendError, match="no CUDAExecutionProvider"):
        backend.open(b"", (), "cuda", SessionOptions())


def test_a_plain_real_model_opens_with_its_ports_and_runs():
    session = open_plain(onnx.load(ppocr_path("cls")), optimize=True, intra_op_num_threads=1)
    (port,) = session.inputs
    assert (port.name, port.dtype, port.shape) == ("x", np.dtype(np.float32), (-1, 3, -1, -1))
    (out,) = session.run([session.outputs[0].name], {"x": ppocr_input("cls")})
    assert out.shape == (1, 2)


def test_inputs_the_engine_refuses_are_the_callers_and_the_rest_the_backends():
    session = open_plain(dynamic_model())
    with pytest.raises(ExecutionError, match="Invalid rank for input: X Got: 1 Expected: 2"):
        session.run(["O"], {"X": np.ones((2,), np.float32)})
    reshape = parse(
        """
        agraph (float[N] X, int64[2] S) => (float[A, B] O)
        {
            O = Reshape(X, S)
        }
        """
    )
    session = open_plain(reshape)
    with pytest.raises(ExecutionError, match=r"^a Reshape operator cannot run on these inputs: .*"):
        session.run(["O"], {"X": np.ones(6, np.float32), "S": np.array([4, 4], np.int64)})
    with pytest.raises(BackendError, match="could not load the model"):
        open_plain(onnx.ModelProto())


def test_onnxruntime_names_the_weights_it_copies_when_it_opens_an_executable():
    backend = OnnxRuntimeBackend()
    # MLAS prepacks a 2-D B of MatMul and Gemm on CPU and never reads the original again.
    assert backend.copies_at_load("", "MatMul", 1, 2, "cpu")
    assert backend.copies_at_load("com.microsoft", "FusedMatMul", 1, 2, "cpu")
    assert backend.copies_at_load("", "Gemm", 1, 2, "cpu")
    assert not backend.copies_at_load("", "MatMul", 1, 3, "cpu")
    assert not backend.copies_at_load("", "MatMul", 0, 2, "cpu")
    assert not backend.copies_at_load("", "Conv", 1, 4, "cpu")
    # A device holds its own copy of every weight.
    assert backend.copies_at_load("", "Conv", 1, 4, "cuda")


def test_the_engines_log_lines_show_only_when_asked(capfd):
    reshape = parse(
        """
        agraph (float[N] X, int64[2] S) => (float[A, B] O)
        {
            O = Reshape(X, S)
        }
        """
    )
    feeds = {"X": np.ones(6, np.float32), "S": np.array([4, 4], np.int64)}
    with pytest.raises(ExecutionError):
        open_plain(reshape).run(["O"], feeds)
    assert capfd.readouterr().err == ""  # the exception says it all; onnxruntime's red line would repeat it
    show_engine_logs(True)
    try:
        with pytest.raises(ExecutionError):
            open_plain(reshape).run(["O"], feeds)
    finally:
        show_engine_logs(False)
    assert "onnxruntime" in capfd.readouterr().err


def test_a_graph_whose_error_message_is_not_utf8_is_a_backend_error():
    # onnxruntime quotes the unknown op in its message; bytes that are not UTF-8 made it a UnicodeDecodeError.
    model = scale_model()
    model.graph.node[0].op_type = "Mulx"
    data = model.SerializeToString().replace(b"Mulx", b"Mu\xff\xfe")
    with pytest.raises(BackendError, match="onnxruntime could not load the model: 'utf-8' codec can't decode"):
        OnnxRuntimeBackend().open(data, [], "cpu", SessionOptions())


# -- the executable cache ---------------------------------------------------------------------------------------

def cached_runner(path, cache):
    from popfuse.runtime import Runner, RuntimeConfig

    return Runner(path, RuntimeConfig(validate_io_params=False, executable_cache=cache))


def test_the_first_load_makes_the_cache_entry_and_the_next_one_maps_it(make_artifact, tmp_path):
    from tests.models import scale_model

    path = make_artifact([scale_model(2.0, n=4096), scale_model(3.0, n=4096)])
    x = np.ones((1, 4096), np.float32)
    want = cached_runner(path, None).execute({"graph1/X": x})["graph1/O"]
    first = cached_runner(path, tmp_path / "cache")
    (entry,) = (tmp_path / "cache").glob("*.ort")
    assert entry.with_suffix(".sha256").read_text() == hashlib.sha256(entry.read_bytes()).hexdigest()
    made = entry.stat().st_mtime_ns
    second = cached_runner(path, tmp_path / "cache")
    assert entry.stat().st_mtime_ns == made and len(list((tmp_path / "cache").iterdir())) == 2
    for runner in (first, second):
        np.testing.assert_array_equal(runner.execute({"graph1/X": x})["graph1/O"], want)


def test_an_entry_that_does_not_match_its_checksum_is_made_again(make_artifact, tmp_path):
    from tests.models import scale_model

    path = make_artifact([scale_model(2.0, n=4096)])
    cached_runner(path, tmp_path)
    (entry,) = tmp_path.glob("*.ort")
    data = bytearray(entry.read_bytes())
    data[-100] ^= 0xFF  # inside a weight: onnxruntime would open it and answer wrong
    entry.write_bytes(data)
    runner = cached_runner(path, tmp_path)
    np.testing.assert_allclose(runner.execute({"graph0/X": np.ones((1, 4096), np.float32)})["graph0/O"],
                               2 + np.arange(4096)[None])
    assert entry.with_suffix(".sha256").read_text() == hashlib.sha256(entry.read_bytes()).hexdigest()


def test_entries_are_named_by_contents_version_and_machine():
    base = cache_entry("/c", "key", "1.31.1", "cpu x86_64 avx2")
    assert base.parent == Path("/c") and base.suffix == ".ort"
    assert len({base, cache_entry("/c", "other", "1.31.1", "cpu x86_64 avx2"),
                cache_entry("/c", "key", "1.32.0", "cpu x86_64 avx2"),
                cache_entry("/c", "key", "1.31.1", "cpu x86_64 avx512f")}) == 4


def test_a_cpu_whose_cpuid_says_otherwise_than_the_kernel_gets_entries_of_its_own(ppocr_build, tmp_path,
                                                                                  monkeypatch):
    # Under an emulator (valgrind, qemu-user) CPUID may deny AVX-512 while /proc/cpuinfo lists it. onnxruntime's
    # kernels follow CPUID: an entry written natively, its NCHWc blocks 16 wide, must not be opened there.
    from popfuse.runtime.backends import onnxruntime as backend

    x = {"graph2/x": ppocr_input("cls", seed=1)}
    want = cached_runner(ppocr_build.popef_path, tmp_path).execute(x)
    try:
        from numpy._core import _multiarray_umath as umath
    except ImportError:  # numpy 1.x
        from numpy.core import _multiarray_umath as umath
    features = umath.__cpu_features__  # what numpy read from CPUID
    widest = [name for name, present in features.items() if present and name.startswith(("AVX512", "X86_V4"))]
    for name in widest or ["AVX2"]:
        monkeypatch.setitem(features, name, False)
    backend._cpu_flags.cache_clear()
    try:
        narrower = cached_runner(ppocr_build.popef_path, tmp_path)
    finally:
        monkeypatch.undo()
        backend._cpu_flags.cache_clear()
    assert len(list(tmp_path.glob("*.ort"))) == 2
    got = narrower.execute(x)
    np.testing.assert_allclose(got["graph2/save_infer_model/scale_0.tmp_1"],
                               want["graph2/save_infer_model/scale_0.tmp_1"], rtol=1e-5, atol=1e-6)


def test_a_cache_folder_that_cannot_be_written_is_said_once_and_the_artifact_still_opens(make_artifact, tmp_path,
                                                                                           caplog):
    from tests.models import scale_model

    path = make_artifact([scale_model(2.0)])
    blocked = tmp_path / "file"
    blocked.write_text("a file where the cache folder would be")
    with caplog.at_level("WARNING"):
        runner = cached_runner(path, blocked / "cache")
    assert "the executable cache" in caplog.text and "cannot be used" in caplog.text
    np.testing.assert_allclose(runner.execute({"graph0/X": np.ones((1, 4), np.float32)})["graph0/O"], [[2, 3, 4, 5]])


def test_an_entry_onnxruntime_refuses_is_removed_and_the_executable_opens_without_it(make_artifact, tmp_path,
                                                                                       caplog):
    from tests.models import scale_model

    path = make_artifact([scale_model(2.0)])
    cached_runner(path, tmp_path)
    (entry,) = tmp_path.glob("*.ort")
    entry.write_bytes(b"not an ORT model")  # with a checksum that matches: written by another hand
    entry.with_suffix(".sha256").write_text(hashlib.sha256(entry.read_bytes()).hexdigest())
    with caplog.at_level("WARNING"):
        runner = cached_runner(path, tmp_path)
    assert f"the executable cache entry {entry} cannot be opened" in caplog.text and not entry.exists()
    np.testing.assert_allclose(runner.execute({"graph0/X": np.ones((1, 4), np.float32)})["graph0/O"], [[2, 3, 4, 5]])


def test_an_artifact_rebuilt_in_place_never_runs_the_old_executable(make_artifact, tmp_path):
    from tests.models import scale_model

    path = make_artifact([scale_model(2.0)])
    x = np.ones((1, 4), np.float32)
    np.testing.assert_allclose(cached_runner(path, tmp_path).execute({"graph0/X": x})["graph0/O"], [[2, 3, 4, 5]])
    rebuilt = make_artifact([scale_model(5.0)], name="rebuilt.popef")
    rebuilt.replace(path)  # same path, other contents: another entry
    np.testing.assert_allclose(cached_runner(path, tmp_path).execute({"graph0/X": x})["graph0/O"], [[5, 6, 7, 8]])
    assert len(list(tmp_path.glob("*.ort"))) == 2


def test_ppocr_through_the_cache_answers_bit_for_bit_as_without_it(ppocr_build, tmp_path):
    from popfuse.benchmarks.models import ppocr

    plain = cached_runner(ppocr_build.popef_path, None)
    cached_runner(ppocr_build.popef_path, tmp_path)  # makes the entry
    mapped = cached_runner(ppocr_build.popef_path, tmp_path)
    for sub, name in zip(plain.subgraphs, ("det", "rec", "cls")):
        feeds = {sub.anchor(k): v for k, v in ppocr(name).feeds.items()}
        want, got = plain.execute(feeds), mapped.execute(feeds)
        assert want.keys() == got.keys()
        for key in want:
            np.testing.assert_array_equal(got[key], want[key])


def resident_bytes_of(path) -> int:
    """Bytes of ``path``'s mappings resident in this process (Linux smaps)."""
    total, inside = 0, False
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            head = line.split()
            if not head[0].endswith(":"):
                inside = line.rstrip("\n").endswith(" " + os.path.realpath(path))
            elif inside and head[0] == "Rss:":
                total += int(head[1]) * 1024
    return total


def test_a_mapped_entry_keeps_no_pages_its_kernels_packed_into_their_own_memory(make_artifact, tmp_path):
    # The weights read once at load to be packed stayed resident in the mapped file: held twice, and the
    # fused memory of two heads on one backbone went from 0.50x to 0.81x that of its sessions.
    from tests.models import slow_model

    path = make_artifact([slow_model(steps=2, width=1024, rows=1)])  # one 4 MB MatMul weight, packed
    cached_runner(path, tmp_path / "cache")  # makes the entry
    runner = cached_runner(path, tmp_path / "cache")
    (entry,) = (tmp_path / "cache").glob("*.ort")
    out = runner.execute({"graph0/X": np.ones((1, 1024), np.float32)})["graph0/O"]
    np.testing.assert_allclose(out, np.full((1, 1024), 0.999**2), rtol=1e-6)
    assert entry.stat().st_size > 4 << 20 and resident_bytes_of(entry) < 1 << 20


def test_the_executable_holds_no_layout_of_this_cpu_and_its_cache_entry_does(ppocr_build, tmp_path):
    # onnxruntime's NCHWc layout pads convolution weights to the CPU's vector width: compiled into the
    # artifact, it made PP-OCR's 1.010x its sources on AVX-512, and tied the artifact to machines of one width.
    from popfuse.fusion.graph import walk_nodes
    from popfuse.runtime.artifact import read_artifact

    executable = onnx.load_from_string(bytes(read_artifact(ppocr_build.popef_path).executable))
    assert not [n for n in walk_nodes(executable.graph.node) if n.domain == "com.microsoft.nchwc"]
    assert read_artifact(ppocr_build.popef_path).metadata.backend.features == OnnxRuntimeBackend().features("cpu")
    cached_runner(ppocr_build.popef_path, tmp_path)
    (entry,) = tmp_path.glob("*.ort")
    assert b"com.microsoft.nchwc" in entry.read_bytes()  # opening added this CPU's layout, kept in the entry


def test_an_executable_depends_on_the_device_and_architecture_not_the_vector_width():
    import platform

    assert OnnxRuntimeBackend().features("cpu") == f"cpu {platform.machine()}"


_ANONYMOUS_AFTER_LOAD = """
import sys
from popfuse.runtime import Runner, RuntimeConfig
Runner(sys.argv[1], RuntimeConfig(executable_cache=sys.argv[2]))
print(next(int(line.split()[1]) for line in open("/proc/self/smaps_rollup") if line.startswith("Anonymous:")))
"""


def test_the_load_that_makes_the_cache_entry_returns_the_heap_optimising_freed(ppocr_build, tmp_path):
    # The first load optimises the graph for this CPU and frees most of what that took; the C library
    # kept it: PP-OCR's first load held 38 MB of anonymous memory against 11 MB for the loads after it.
    import subprocess
    import sys

    def anonymous_kb() -> int:
        args = [sys.executable, "-c", _ANONYMOUS_AFTER_LOAD, str(ppocr_build.popef_path), str(tmp_path)]
        return int(subprocess.run(args, check=True, capture_output=True, text=True).stdout)

    first, later = anonymous_kb(), anonymous_kb()
    assert len(list(tmp_path.glob("*.ort"))) == 1
    assert first < later + 8 * 1024, (first, later)


def test_a_temporary_folder_that_cannot_be_written_is_a_backend_error_with_what_to_do(ppocr_build, tmp_path,
                                                                                   monkeypatch):
    # Without the cache, the layout's rewrites read the weights from temporary files: a full or read-only
    # temporary folder surfaced as a bare OSError, which Runner does not raise.
    import tempfile

    from popfuse.runtime import Runner, RuntimeConfig

    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the temporary folder would be")
    monkeypatch.setattr(tempfile, "tempdir", str(blocked))
    with pytest.raises(BackendError, match=r"cannot write the executable's weights to a temporary folder.*TMPDIR"):
        Runner(ppocr_build.popef_path, RuntimeConfig(executable_cache=None))
