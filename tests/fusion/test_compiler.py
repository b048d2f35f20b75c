"""The compiler: a build writes reproducible artifacts, or nothing; the compile stage names its failing pass."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import onnx
import pytest

from popfuse.fusion import FusionError, PassError, build, compile_artifact, fuse
from popfuse.fusion.graph import walk_nodes
from popfuse.fusion.passes.precision import PrecisionWarning
from popfuse.runtime.artifact import read_artifact
from popfuse.runtime.errors import OutputError
from tests.conftest import ppocr_config
from tests.models import scale_model, unknown_op_model


def test_two_builds_of_the_ppocr_fusion_are_byte_identical(ppocr_build, tmp_path):
    again = build(ppocr_config(tmp_path))
    assert again.popef_path.read_bytes() == ppocr_build.popef_path.read_bytes()
    assert again.fused_model_path.read_bytes() == ppocr_build.fused_model_path.read_bytes()


def test_the_optimisers_node_names_are_numbered_in_graph_order(ppocr_build):
    executable = onnx.load_from_string(bytes(read_artifact(ppocr_build.popef_path).executable))
    generated = [n.name for n in walk_nodes(executable.graph.node) if n.name and "/" not in n.name]
    assert len(generated) > 3
    assert [int(name.rsplit("_token_", 1)[1]) for name in generated] == list(range(len(generated)))


def test_a_build_whose_compile_fails_writes_nothing_and_names_the_pass(tmp_path):
    onnx.save(unknown_op_model(), tmp_path / "custom.onnx")
    onnx.save(scale_model(), tmp_path / "plain.onnx")
    config = {"output_dir": str(tmp_path / "out"),
              "model_fusion": [{"input_model": str(tmp_path / "plain.onnx")},
                               {"input_model": str(tmp_path / "custom.onnx")}]}
    with pytest.raises(PassError, match=r"the fused graph: pass 'compile': onnxruntime could not compile.*Frobnicate"):
        build(config)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_compile_artifact_takes_the_typed_fused_model():
    with pytest.raises(FusionError, match="compile_artifact takes the FusedModel of fuse_models"):
        compile_artifact(fuse([scale_model()]), "onnxruntime-cpu")


def test_fp16_build_reports_what_it_kept_and_warns_past_the_tolerance(tmp_path):
    onnx.save(scale_model(1e6, n=8), tmp_path / "big.onnx")  # its output leaves float16's range
    config = {"output_dir": str(tmp_path), "precision": "fp16",
              "model_fusion": [{"input_model": str(tmp_path / "big.onnx")}]}
    lines = []
    with pytest.warns(PrecisionWarning, match=r"model 'big': fp16 error inf passes the tolerance 1e-02"):
        build(config, progress=lines.append)
    assert any(line.strip().startswith("fp16: 2 of 2 nodes kept float32 (1 weights, 1 range); error inf")
               for line in lines)
    strict = {**config, "precision_strict": True, "output_dir": str(tmp_path / "strict")}
    with pytest.raises(PassError, match=r"model 'big': pass 'precision' \(after .*\): fp16: .*passes the tolerance"):
        build(strict)
    assert not (tmp_path / "strict").exists()
    kept_io = {**strict, "keep_io_types": True}  # float32 outputs hold the product: within tolerance
    with warnings.catch_warnings():
        warnings.simplefilter("error", PrecisionWarning)
        result = build(kept_io)
    assert [s.precision for s in result.fusion_map.subgraphs] == ["fp16"]
    assert [a.tensor_info.data_type for a in read_artifact(result.popef_path).metadata.anchors][1:] == ["F32", "F32"]


def test_two_fp16_builds_are_byte_identical(tmp_path):
    onnx.save(scale_model(3.0, n=8), tmp_path / "m.onnx")
    paths = []
    for k in range(2):
        config = {"output_dir": str(tmp_path / str(k)), "precision": "fp16",
                  "model_fusion": [{"input_model": str(tmp_path / "m.onnx")}]}
        paths.append(build(config).popef_path)
    assert paths[0].read_bytes() == paths[1].read_bytes()


def small_config(tmp_path, output_dir, n: int = 20_000) -> dict:
    onnx.save(scale_model(n=n), tmp_path / "m.onnx")
    return {"output_dir": str(output_dir), "model_fusion": [{"input_model": str(tmp_path / "m.onnx")}]}


@pytest.mark.parametrize("stage", ["loaded", "fused", "compiled"])
def test_ctrl_c_at_any_stage_leaves_output_dir_as_it_was(tmp_path, stage):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")

    def interrupt(line: str) -> None:
        if line.startswith(stage):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build(small_config(tmp_path, out), progress=interrupt)
    assert os.listdir(out) == ["keep.txt"]


@pytest.mark.parametrize("n, full", [(20_000, "model_fusion.onnx"), (8_000, "executable.popef")])
def test_a_full_disk_fails_the_build_by_name_and_leaves_nothing(tmp_path, tiny_disk, n, full):
    # With 8,000 weights the fused ONNX fits on the 64 KB disk and the artifact does not: it was left behind.
    with pytest.raises(OutputError, match=rf"out/{full}: cannot write: No space left on device; the disk"):
        build(small_config(tmp_path, tiny_disk / "out", n))
    assert os.listdir(tiny_disk) == []


def test_outputs_follow_the_umask_and_a_killed_builds_temp_files_go(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (out / f".executable.popef.{dead.stdout.strip()}.k2j4h5.tmp").write_bytes(bytes(1000))
    old = os.umask(0o027)
    try:
        result = build(small_config(tmp_path, out))
    finally:
        os.umask(old)
    assert sorted(os.listdir(out)) == ["executable.popef", "model_fusion.onnx"]
    assert {(out / n).stat().st_mode & 0o777 for n in os.listdir(out)} == {0o640}
    assert result.popef_path.stat().st_size == result.artifact_bytes


def test_the_ppocr_artifact_is_no_larger_than_its_sources(ppocr_build):
    # Compiled with onnxruntime's CPU layout, convolution weights were padded to the vector width:
    # 1.010x the sources on AVX-512. The executable now holds each weight at its own size.
    from tests.models import PPOCR, ppocr_path

    sources = sum(ppocr_path(name).stat().st_size for name in PPOCR)
    assert ppocr_build.popef_path.stat().st_size <= sources
