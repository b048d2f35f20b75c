"""The popfuse command, run as a user runs it: build, dump and run, and their errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import onnx
import pytest

from popfuse.cli import main
from tests.models import scale_model


@pytest.fixture
def project(tmp_path):
    onnx.save(scale_model(2.0), tmp_path / "a.onnx")
    onnx.save(scale_model(3.0), tmp_path / "b.onnx")
    (tmp_path / "config.yaml").write_text(
        textwrap.dedent(
            """
            output_dir: out
            output_model: fused.onnx
            export_popef: True
            model_fusion:
              - input_model: a.onnx
              - input_model: b.onnx
            """
        )
    )
    return tmp_path


def popfuse(*args, cwd):
    # The installed console script, as a user calls it.
    exe = os.path.join(os.path.dirname(sys.executable), "popfuse")
    return subprocess.run([exe, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_build_dump_run_from_the_shell(project):
    built = popfuse("build", "config.yaml", cwd=project)
    assert built.returncode == 0, built.stderr
    assert "[1/2] a:" in built.stdout and "subgraphs: 2" in built.stdout and "artifact:" in built.stdout
    assert built.stderr == ""
    assert (project / "out" / "fused.onnx").is_file() and (project / "out" / "executable.popef").is_file()

    dumped = popfuse("dump", "out/executable.popef", "--json", cwd=project)
    info = json.loads(dumped.stdout)
    assert [a["name"] for a in info["anchors"]] == ["index", "graph0/X", "graph0/O", "graph1/X", "graph1/O"]

    np.save(project / "x.npy", np.ones((1, 4), np.float32))
    ran = popfuse("run", "out/executable.popef", "--index", "1", "--input", "X=x.npy", "--iterations", "20",
                  cwd=project)
    assert ran.returncode == 0, ran.stderr
    assert "graph1/O: float32 [1, 4]" in ran.stdout and "[[3. 4. 5. 6.]]" in ran.stdout
    assert "20 iterations: mean" in ran.stdout and "p99" in ran.stdout


def test_errors_are_one_line_without_traceback(project, capsys):
    (project / "bad.yaml").write_text("model_fusion:\n  - input_model: a.onnx\n    precision: fp8\n")
    assert main(["build", str(project / "bad.yaml")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("popfuse build: error:") and "supported precisions: fp32, fp16" in err
    assert "Traceback" not in err

    assert main(["dump", str(project / "a.onnx")]) == 1
    assert "not a popfuse artifact" in capsys.readouterr().err

    assert main(["build", str(project / "config.yaml")]) == 0
    capsys.readouterr()
    artifact = project / "out" / "executable.popef"
    assert main(["run", str(artifact), "--index", "0", "--input", "X=missing.npy"]) == 1
    assert "cannot load 'missing.npy'" in capsys.readouterr().err
    np.save(project / "wide.npy", np.ones((1, 9), np.float32))
    assert main(["run", str(artifact), "--index", "5", "--input", f"graph0/X={project / 'wide.npy'}"]) == 1
    assert "out of range" in capsys.readouterr().err


def test_corrupt_model_file_is_named(project, capsys):
    (project / "a.onnx").write_bytes(b"\x00garbage")
    assert main(["build", str(project / "config.yaml")]) == 1
    err = capsys.readouterr().err
    assert "a.onnx" in err and "not an ONNX model" in err
    assert not (project / "out").exists()


def test_serve_names_artifacts_that_share_a_file_name(make_artifact, tmp_path):
    from popfuse.cli import make_parser
    from popfuse.fusion import ModelOptions
    from popfuse.runtime.server.errors import ServerConfigError
    from popfuse.runtime.server.serve import build
    from popfuse.runtime.server.settings import ServerSettings

    one = make_artifact([scale_model(2.0)], [ModelOptions(name="two")], name="executable.popef")
    other = tmp_path / "other"
    other.mkdir()
    (other / "executable.popef").write_bytes(make_artifact([scale_model(3.0)], [ModelOptions(name="three")],
                                                           name="b.popef").read_bytes())
    args = make_parser().parse_args(["serve", f"first={one}", f"second={other / 'executable.popef'}"])
    dataplane = build(args.artifacts, ServerSettings())
    names = {e["name"]: e.get("models") for e in dataplane.repository.index() if "models" in e}
    assert names == {"first": ["two"], "second": ["three"]}
    plain = make_parser().parse_args(["serve", str(one), str(other / "executable.popef")])
    with pytest.raises(ServerConfigError, match=r"two artifacts are named 'executable'.*name them: popfuse serve a="):
        build(plain.artifacts, ServerSettings())
