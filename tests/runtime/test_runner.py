"""Runner: PopRT's execute contract, request checks, version check, threads and clean logs."""

from __future__ import annotations

import platform
from dataclasses import replace

import numpy as np
import onnxruntime as ort
import pytest

from popfuse.fusion import ModelOptions
from popfuse.runtime import ArtifactError, ExecutionError, ModelRunner, Runner, RuntimeConfig
from popfuse.runtime import metadata as md
from popfuse.runtime.artifact import read_artifact, to_blobs, write_artifact
from popfuse.runtime.backends import SessionOptions, Weight
from popfuse.runtime.backends.onnxruntime import OnnxRuntimeBackend
from popfuse.runtime.compression import compress, decompress
from popfuse.runtime.errors import BackendError
from popfuse.runtime.popef import Blob, write_blobs
from popfuse.runtime.runner import check_artifact, weights
from tests.concurrency import run_in_threads
from tests.models import dynamic_model, if_model, scale_model

LENIENT = RuntimeConfig(validate_io_params=False)


@pytest.fixture
def artifact(make_artifact):
    """Subgraph 0: X*2+B (X [1,4]); 1: its own If (X [1,3]); 2: Relu with a dynamic batch."""
    return make_artifact([scale_model(2.0), if_model(), dynamic_model()])


def idx(i):
    return np.array([i], np.uint32)


def test_runtime_config_has_poprt_defaults():
    config = RuntimeConfig()
    assert config.validate_io_params is True
    assert config.timeout_ns == 10_000_000
    assert config.batching_dim == -1
    assert config.thread_safe is True
    assert config.check_package_hash is True
    assert config.ring_buffer_size_multiplier == 2
    assert ModelRunner is Runner


def test_execute_writes_into_callers_buffers(artifact):
    runner = ModelRunner(str(artifact), LENIENT)
    out = np.zeros((1, 4), np.float32)
    result = runner.execute({"index": idx(0), "graph0/X": np.ones((1, 4), np.float32)}, {"graph0/O": out})
    assert result["graph0/O"] is out
    np.testing.assert_allclose(out, [[2, 3, 4, 5]])


def test_index_is_inferred_from_names(artifact):
    runner = Runner(artifact, LENIENT)
    x = np.array([[1, 2, 3]], np.float32)
    np.testing.assert_allclose(runner.execute({"graph1/X": x})["graph1/O"], x + 1)


def test_runner_loads_from_bytes(artifact):
    runner = Runner(artifact.read_bytes(), LENIENT)
    assert [s.name for s in runner.subgraphs] == ["model0", "model1", "model2"]


def test_descriptors(artifact):
    runner = Runner(artifact)
    inputs = {d.name: d for d in runner.get_execute_inputs()}
    assert list(inputs) == ["index", "graph0/X", "graph1/X", "graph2/X"]
    assert inputs["index"].shape == (1,) and inputs["index"].numpy_data_type() == np.uint32
    assert inputs["index"].subgraph is None
    assert inputs["graph0/X"].size_in_bytes == 16 and inputs["graph0/X"].subgraph == 0
    assert inputs["graph2/X"].shape == (-1, 4) and inputs["graph2/X"].size_in_bytes == -1
    assert not any(d.popef_contains_tensor_data for d in inputs.values())
    outputs = {d.name: d for d in runner.get_execute_outputs()}
    assert outputs["graph1/O"].shape == (1, 3) and outputs["graph1/O"].numpy_data_type() == np.float32


def test_execute_async_returns_a_future(artifact):
    with Runner(artifact, LENIENT) as runner:
        futures = [runner.execute_async({"graph0/X": np.full((1, 4), i, np.float32)}) for i in range(10)]
        for i, f in enumerate(futures):
            np.testing.assert_allclose(f.wait()["graph0/O"], 2 * i + np.arange(4)[None])
            assert f.done()


def test_validated_request_checks_everything(artifact):
    runner = Runner(artifact, RuntimeConfig(validate_io_params=True))
    out = runner.execute({"index": idx(2), "graph2/X": -np.ones((5, 4), np.float32)})
    np.testing.assert_array_equal(out["graph2/O"], np.zeros((5, 4), np.float32))
    with pytest.raises(ExecutionError, match="needs the 'index' input"):
        runner.execute({"graph2/X": np.ones((5, 4), np.float32)})


@pytest.mark.parametrize(
    "inputs, outputs, match",
    [
        ({"graph0/Z": np.ones((1, 4), np.float32)}, None, r"unknown input tensor 'graph0/Z'; did you mean graph0/X"),
        ({"X": np.ones((1, 4), np.float32)}, None, r"unknown input tensor 'X'; did you mean graph\d/X"),
        ({"index": idx(0), "graph0/X": np.ones((1, 4), np.float64)}, None,
         r"input 'graph0/X': expected dtype float32, received float64"),
        ({"index": idx(0), "graph0/X": np.ones((2, 4), np.float32)}, None,
         r"input 'graph0/X': expected shape \[1, 4\], received \[2, 4\]"),
        ({"index": idx(2), "graph2/X": np.ones((2, 5), np.float32)}, None,
         r"input 'graph2/X': expected shape \[\?, 4\], received \[2, 5\]"),
        ({"index": idx(3)}, None, r"'index' is 3, out of range: the artifact has 3 subgraphs \(0..2\)"),
        ({"index": np.array([0.5], np.float32)}, None, "must hold one integer"),
        ({"index": idx(0), "graph0/X": np.ones((1, 4), np.float32), "graph1/X": np.ones((1, 3), np.float32)},
         None, r"tensors of more than one subgraph.*subgraph 0 \('model0'\): graph0/X; "
               r"subgraph 1 \('model1'\): graph1/X"),
        ({"index": idx(1), "graph0/X": np.ones((1, 4), np.float32)}, None,
         r"index 1 selects subgraph 1 \('model1'\), but the tensors graph0/X belong to subgraph 0"),
        ({"index": idx(0)}, None, r"subgraph 0 \('model0'\) needs input\(s\) graph0/X"),
        ({"graph0/O": np.ones((1, 4), np.float32)}, None,
         r"'graph0/O' is an output of the executable, passed as an input"),
        ({"index": idx(0), "graph0/X": np.ones((1, 4), np.float32)}, {"graph1/O": np.zeros((1, 3), np.float32)},
         "tensors of more than one subgraph"),
        ({"index": idx(0), "graph0/X": np.ones((1, 4), np.float32)}, {"graph0/O": np.zeros((1, 5), np.float32)},
         r"output buffer 'graph0/O': expected shape \[1, 4\], received \[1, 5\]"),
        ({}, None, "needs the 'index' input"),
    ],
)
def test_bad_requests_name_the_tensor(artifact, inputs, outputs, match):
    runner = Runner(artifact, RuntimeConfig(validate_io_params=True))
    with pytest.raises(ExecutionError, match=match):
        runner.execute(inputs, outputs)


def test_unvalidated_requests_still_fail_cleanly(artifact):
    runner = Runner(artifact, LENIENT)
    # Unchecked up front, a wrong dtype fails in the backend, and the error then says what was wrong with it.
    with pytest.raises(ExecutionError, match=r"input 'graph0/X': expected dtype float32, received float64"):
        runner.execute({"graph0/X": np.ones((1, 4), np.float64)})
    expected = r"output buffer 'graph0/O': the result is float32 \[1, 4\], the buffer is float32 \[4\]"
    with pytest.raises(ExecutionError, match=expected):
        runner.execute({"graph0/X": np.ones((1, 4), np.float32)}, {"graph0/O": np.zeros(4, np.float32)})
    with pytest.raises(ExecutionError, match="needs input"):
        runner.execute({"index": idx(1)})
    with pytest.raises(ExecutionError, match="names no tensor and no 'index'"):
        runner.execute({})


def with_backend(artifact, path, **changes):
    """A copy of ``artifact`` at ``path`` whose backend record says something else."""
    original = read_artifact(artifact)
    backend = replace(original.metadata.backend, **changes)
    write_artifact(path, replace(original, metadata=replace(original.metadata, backend=backend)))
    return path


def test_artifact_from_another_backend_version_is_refused(artifact, tmp_path, caplog):
    stale = with_backend(artifact, tmp_path / "stale.popef", version="0.0.1")
    expected = r"compiled by onnxruntime 0\.0\.1, but this machine has onnxruntime .*popfuse build"
    with pytest.raises(ArtifactError, match=expected):
        Runner(stale)
    runner = Runner(stale, RuntimeConfig(validate_io_params=False, check_package_hash=False))
    assert "loading anyway" in caplog.text
    np.testing.assert_allclose(runner.execute({"graph0/X": np.zeros((1, 4), np.float32)})["graph0/O"], [[0, 1, 2, 3]])


def test_an_artifact_is_checked_without_being_opened_and_opened_without_being_read_again(artifact, tmp_path,
                                                                                        monkeypatch):
    stale = with_backend(artifact, tmp_path / "stale.popef", version="0.0.1")
    opened = []
    monkeypatch.setattr(OnnxRuntimeBackend, "open", lambda *a, **k: opened.append(a))
    with pytest.raises(ArtifactError, match="compiled by onnxruntime 0.0.1"):
        check_artifact(stale)
    checked = check_artifact(artifact)
    assert not opened
    monkeypatch.undo()
    monkeypatch.setattr("popfuse.runtime.runner.read_artifact", lambda *a: pytest.fail("read again"))
    runner = Runner(artifact, LENIENT, checked=checked)
    np.testing.assert_allclose(runner.execute({"graph0/X": np.zeros((1, 4), np.float32)})["graph0/O"], [[0, 1, 2, 3]])


def test_artifact_from_before_slots_is_refused_with_the_fix(artifact, tmp_path):
    # The layout before slots recorded "packed" streams; its executable takes other inputs, so it must be rebuilt.
    blobs = to_blobs(read_artifact(artifact))
    meta = compress(decompress(blobs[0].payload, 1 << 26, "metadata").replace(b'"slots":', b'"packed":'))
    old = tmp_path / "old.popef"
    write_blobs(old, [Blob(blobs[0].type, blobs[0].name, meta), *blobs[1:]])
    expected = r"old.popef: the Metadata record is malformed: Metadata.slots: missing.*popfuse build"
    with pytest.raises(ArtifactError, match=expected):
        Runner(old)


def test_artifact_compiled_for_another_architecture_is_refused(artifact, tmp_path):
    foreign = with_backend(artifact, tmp_path / "foreign.popef", features="cpu imaginary_isa64")
    expected = r"compiled for a machine with \[cpu imaginary_isa64\], but this machine has \[cpu .*popfuse build"
    with pytest.raises(ArtifactError, match=expected):
        Runner(foreign)


def test_an_artifact_compiled_for_one_cpus_instruction_sets_says_to_rebuild_it(artifact, tmp_path):
    # An earlier popfuse recorded the instruction sets its layout depended on: the refusal read as if this
    # machine lacked them.
    old = with_backend(artifact, tmp_path / "old.popef", features=f"cpu {platform.machine()} avx avx2 avx512f")
    expected = (r"compiled by an earlier popfuse for one CPU's instruction sets \[cpu \w+ avx avx2 avx512f\]; "
                r"artifacts now record \[cpu \w+\] and open on any CPU of it\. Rebuild it here")
    with pytest.raises(ArtifactError, match=expected):
        Runner(old)


def test_switching_subgraphs_never_reloads(artifact, monkeypatch):
    runner = Runner(artifact, LENIENT)

    def no_reload(*args, **kwargs):
        raise AssertionError("a session was created after load")

    monkeypatch.setattr(ort, "InferenceSession", no_reload)
    for i in range(30):
        k = i % 3
        x = np.ones((1, 4 if k != 1 else 3), np.float32) if k != 2 else np.ones((2, 4), np.float32)
        runner.execute({f"graph{k}/X": x})


def test_concurrent_execute_across_subgraphs(artifact):
    runner = Runner(artifact, LENIENT)

    def work(seed):
        rng = np.random.default_rng(seed)
        for _ in range(200):
            k = int(rng.integers(0, 3))
            if k == 0:
                x = rng.random((1, 4), dtype=np.float32)
                np.testing.assert_allclose(runner.execute({"graph0/X": x})["graph0/O"], 2 * x + np.arange(4), rtol=1e-6)
            elif k == 1:
                x = rng.random((1, 3), dtype=np.float32) + 0.1
                np.testing.assert_allclose(runner.execute({"graph1/X": x})["graph1/O"], x + 1, rtol=1e-6)
            else:
                x = rng.standard_normal((int(rng.integers(1, 9)), 4)).astype(np.float32)
                np.testing.assert_allclose(runner.execute({"graph2/X": x})["graph2/O"], np.maximum(x, 0))

    run_in_threads(work, 8)


def test_runs_leave_stderr_clean(make_artifact, capfd):
    # Empty outputs of unselected branches and dynamic shapes must not make onnxruntime warn.
    path = make_artifact([dynamic_model(), scale_model(), dynamic_model()], [ModelOptions(name=n) for n in "abc"])
    runner = Runner(path, LENIENT)
    for batch in (1, 3, 7):
        runner.execute({"graph0/X": np.ones((batch, 4), np.float32)})
        runner.execute({"graph1/X": np.ones((1, 4), np.float32)})
        runner.execute({"graph2/X": np.ones((batch, 4), np.float32)})
    assert capfd.readouterr().err == ""


def test_metadata_uses_popef_names(artifact):
    meta = md.to_json(read_artifact(artifact).metadata)
    assert {"anchors", "executable", "ipuVersion", "isInference", "replicationFactor", "programFlow"} <= set(meta)
    index = meta["anchors"][0]
    assert index == {"name": "index", "tensorInfo": {"shape": [1], "dataType": "U32"}, "type": "INPUT", "programs": [0]}
    assert read_artifact(artifact).fusion_map.index_anchor == "index"


def test_an_explicit_index_is_checked_even_for_a_known_request(artifact):
    runner = Runner(artifact, LENIENT)
    x = np.ones((1, 4), np.float32)
    for _ in range(2):  # the second time the names' subgraph comes from the runner's cache
        assert runner.execute({"index": idx(0), "graph0/X": x})["graph0/O"].shape == (1, 4)
    with pytest.raises(ExecutionError, match="index 1 selects subgraph 1"):
        runner.execute({"index": idx(1), "graph0/X": x})
    with pytest.raises(ExecutionError, match="out of range"):
        runner.execute({"index": idx(7), "graph0/X": x})
    # A request of the index alone is decided by its value, every time.
    with pytest.raises(ExecutionError, match=r"subgraph 0 \('model0'\) needs input"):
        runner.execute({"index": idx(0)})
    with pytest.raises(ExecutionError, match=r"subgraph 1 \('model1'\) needs input"):
        runner.execute({"index": idx(1)})


def test_weights_are_used_in_place_from_the_mapped_file(make_artifact):
    path = make_artifact([scale_model(2.0, n=20_000)])
    (weight,) = weights(read_artifact(path))
    assert weight.name == "weights/0" and weight.location == "weights"
    assert weight.data.shape == (20_000,)
    # A view of the read-only mapping, aligned by the writer: nothing was copied.
    assert not weight.data.flags.owndata and not weight.data.flags.writeable
    assert weight.data.ctypes.data % 64 == 0
    np.testing.assert_array_equal(weight.data, np.arange(20_000))
    runner = Runner(path, LENIENT)
    x = np.ones((1, 20_000), np.float32)
    np.testing.assert_allclose(runner.execute({"graph0/X": x})["graph0/O"], 2 + np.arange(20_000)[None])


def test_a_weight_outside_its_blob_is_an_artifact_error(make_artifact, tmp_path):
    good = read_artifact(make_artifact([scale_model(2.0, n=20_000)]))
    (ref,) = good.metadata.tensor_data
    moved = replace(good.metadata, tensor_data=(replace(ref, offset=ref.offset + 64),))
    write_artifact(tmp_path / "bad.popef", replace(good, metadata=moved))
    with pytest.raises(ArtifactError, match=r"bad\.popef: the records disagree: Metadata\.tensorData\[0\]\.offset: "
                       r"80000 bytes at 64 reach past the end of tensor blob 'weights' \(80000 bytes\)"):
        Runner(tmp_path / "bad.popef")


def test_a_weight_missing_from_the_metadata_is_a_backend_error(make_artifact, tmp_path):
    good = read_artifact(make_artifact([scale_model(2.0, n=20_000)]))
    write_artifact(tmp_path / "bad.popef", replace(good, metadata=replace(good.metadata, tensor_data=())))
    with pytest.raises(BackendError, match="onnxruntime could not prepare the executable cache"):
        Runner(tmp_path / "bad.popef")
    with pytest.raises(BackendError, match="onnxruntime could not load the model"):
        Runner(tmp_path / "bad.popef", RuntimeConfig(executable_cache=None))


def test_the_backend_refuses_an_external_location_that_is_not_a_blob_name():
    backend = OnnxRuntimeBackend()
    with pytest.raises(BackendError, match=r"external data at '\.\./w'; expected a tensor blob's name"):
        backend.open(b"", [Weight("w", "../w", np.zeros(1, np.float32))], "cpu", SessionOptions())


def test_requests_of_changing_shapes_get_their_own_shapes(artifact):
    # The runner remembers the subgraph of a request signature, not its shapes: each request keeps its own.
    runner = Runner(artifact, LENIENT)
    for batch in (1, 3, 1, 5, 3):
        x = np.arange(batch * 4, dtype=np.float32).reshape(batch, 4) - 6
        np.testing.assert_array_equal(runner.execute({"graph2/X": x})["graph2/O"], np.maximum(x, 0))
