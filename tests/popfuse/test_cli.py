"""The popfuse command, run as a user runs it: build, dump and run, and their errors."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest

from popfuse.cli import main, make_parser
from popfuse.fusion.graph import IR_VERSION
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


def test_build_prints_each_fp16_models_report_and_warns_past_the_tolerance(project):
    onnx.save(scale_model(1e6), project / "big.onnx")  # its float16 output overflows
    (project / "fp16.yaml").write_text(
        "output_dir: out16\nprecision: fp16\nmodel_fusion:\n  - input_model: a.onnx\n  - input_model: big.onnx\n"
    )
    built = popfuse("build", "fp16.yaml", cwd=project)
    assert built.returncode == 0, built.stderr
    reports = [line.strip() for line in built.stdout.splitlines() if line.strip().startswith("fp16:")]
    assert len(reports) == 2 and reports[0].startswith("fp16: 0 of 2 nodes kept float32; error ")
    assert built.stderr.startswith("popfuse build: warning: model 'big': fp16 error inf passes the tolerance 1e-02")
    (project / "strict.yaml").write_text((project / "fp16.yaml").read_text() + "precision_strict: true\n")
    refused = popfuse("build", "strict.yaml", cwd=project)
    assert refused.returncode == 1
    assert "popfuse build: error: model 'big': pass 'precision'" in refused.stderr and "Traceback" not in refused.stderr


def test_build_dump_run_from_the_shell(project):
    built = popfuse("build", "config.yaml", cwd=project)
    assert built.returncode == 0, built.stderr
    assert "[1/2] a:" in built.stdout and "subgraphs: 2" in built.stdout and "artifact:" in built.stdout
    # The long steps say what they do and how long each took.
    assert "compiling for onnxruntime-cpu: compile, node_names, opset_imports, weights …" in built.stdout
    assert "  compile: " in built.stdout and "  weights: " in built.stdout
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


def test_corrupt_model_file_is_named(project, capsys):
    (project / "a.onnx").write_bytes(b"\x00garbage")
    assert main(["build", str(project / "config.yaml")]) == 1
    err = capsys.readouterr().err
    assert "a.onnx" in err and "not an ONNX model" in err
    assert not (project / "out").exists()


# -- behaving like a well-kept Unix tool ----------------------------------------------------------------------

POPFUSE = Path(sys.executable).with_name("popfuse")


def shell(*args, cwd, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([str(POPFUSE), *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=120,
                          **kwargs)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli")
    onnx.save(scale_model(2.0), folder / "a.onnx")
    onnx.save(scale_model(3.0), folder / "b.onnx")
    (folder / "config.yaml").write_text("model_fusion:\n  - input_model: a.onnx\n  - input_model: b.onnx\n")
    assert shell("build", "config.yaml", cwd=folder).returncode == 0
    np.save(folder / "x.npy", np.ones((1, 4), np.float32))
    return folder


@pytest.mark.parametrize(
    "args, status, fragment",
    [
        ((), 2, "popfuse: error: the following arguments are required: COMMAND (see popfuse --help)"),
        (("frobnicate",), 2, "popfuse: error: argument COMMAND: invalid choice: 'frobnicate'"),
        (("build",), 2, "popfuse build: error: the following arguments are required: config"),
        (("run", "executable.popef", "--iterations", "0"), 2, "expected at least 1, received 0"),
        (("run", "executable.popef", "--input", "X"), 2,
         "popfuse run: error: --input 'X' must look like NAME=PATH.npy"),
        (("run", "executable.popef", "--index", "7", "--input", "X=x.npy"), 2,
         "--index 7 is out of range: executable.popef has 2 models, 0..1 (0 a, 1 b)"),
        (("bench", "--only", "dispatch,warp"), 2, "unknown suite(s) warp; choose from dispatch"),
        (("completion", "fish"), 2, "invalid choice: 'fish'"),
        (("serve",), 2, "popfuse serve: error: name the artifacts to serve, or a catalog with --ray CATALOG.yaml"),
        (("serve", "executable.popef", "--ray", "c.yaml"), 2, "with --ray, the catalog names the artifacts"),
        (("serve", "--ray", "c.yaml", "--max-batch-size", "8"), 2, "--max-batch-size does not apply with --ray"),
        (("serve", "--ray", "c.yaml", "--workers", "3"), 2,
         "--workers does not apply with --ray; set replicas.workers in the catalog"),
        (("serve", "--ray", "c.yaml", "--grpc-restricted-api", "inference:k=v"), 2,
         "--grpc-restricted-api does not apply with --ray; set ingress.grpc_restricted_api in the catalog"),
        (("serve", "--ray", "c.yaml", "--header-timeout", "3"), 2, "--header-timeout does not apply with --ray"),
        (("serve", "--ray", "c.yaml", "--worker-processes", "3"), 2,
         "--worker-processes does not apply with --ray; set replicas.num_replicas in the catalog"),
        (("serve", "--ray", "c.yaml", "--memory-allocator", "jemalloc"), 2,
         "--memory-allocator does not apply with --ray"),
        (("serve", "a.popef", "--memory-allocator", "tcmalloc"), 2, "invalid choice: 'tcmalloc'"),
        (("serve", "--ray", "missing.yaml"), 1, "popfuse serve: error: missing.yaml: no such catalog file"),
        (("build", "missing.yaml"), 1, "popfuse build: error: missing.yaml: no such config file"),
        (("dump", "a.onnx"), 1, "popfuse dump: error: a.onnx: blob 0 at byte 0"),
        (("run", "executable.popef", "--index", "0", "--input", "X=nothing.npy"), 1, "cannot load 'nothing.npy'"),
        (("run", "a.onnx"), 1, "popfuse run: error: a.onnx"),
    ],
)
def test_failures_are_one_line_with_the_status_of_their_kind(built, args, status, fragment):
    ran = shell(*args, cwd=built)
    assert ran.returncode == status, ran.stderr
    assert fragment in ran.stderr
    assert len(ran.stderr.strip().splitlines()) == 1 and "Traceback" not in ran.stderr


def test_debug_adds_the_traceback(built):
    ran = shell("dump", "a.onnx", "--debug", cwd=built)
    assert ran.returncode == 1 and "Traceback (most recent call last)" in ran.stderr
    assert ran.stderr.strip().splitlines()[-1].startswith("popfuse dump: error: a.onnx")


def test_serve_without_its_extra_says_how_to_install_it(built):
    # Python's own way of making a module unimportable: an entry of None in sys.modules.
    code = "import sys; sys.modules['uvicorn'] = None; from popfuse.cli import main; sys.exit(main(['serve', 'x']))"
    ran = subprocess.run([sys.executable, "-c", code], cwd=built, capture_output=True, text=True, timeout=60)
    assert ran.returncode == 2
    assert ran.stderr.strip() == ("popfuse serve: error: popfuse serve needs the serve extra, which is not installed "
                                  "here (no module 'uvicorn'): pip install 'popfuse[serve]'")


def test_serve_ray_without_its_extra_says_how_to_install_it(built):
    (built / "catalog.yaml").write_text("artifacts: {fused: executable.popef}\nreplicas: {memory_budget: 1 MB}\n")
    code = ("import sys; sys.modules['ray'] = None; from popfuse.cli import main; "
            "sys.exit(main(['serve', '--ray', 'catalog.yaml']))")
    ran = subprocess.run([sys.executable, "-c", code], cwd=built, capture_output=True, text=True, timeout=60)
    assert ran.returncode == 2
    assert ran.stderr.strip() == ("popfuse serve: error: popfuse serve --ray needs the ray extra, which is not "
                                  "installed here (no module 'ray'): pip install 'popfuse[ray]'")


def test_a_closed_pipe_ends_quietly(built):
    reader_gone = subprocess.Popen([str(POPFUSE), "dump", "--json", "executable.popef"], cwd=built,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    reader_gone.stdout.close()  # before popfuse writes: its first write meets a closed pipe
    _, err = reader_gone.communicate(timeout=60)
    assert reader_gone.returncode == 141 and err == b""
    piped = subprocess.run(f"{POPFUSE} dump executable.popef | head -1", shell=True, cwd=built, capture_output=True,
                           text=True, timeout=60)
    assert piped.stdout.startswith("PopEF-structured artifact executable.popef") and piped.stderr == ""


def test_ctrl_c_during_a_build_is_one_line_and_status_130(tmp_path):
    onnx.save(slow_compile_model(), tmp_path / "big.onnx")
    (tmp_path / "config.yaml").write_text("model_fusion:\n  - input_model: big.onnx\n")
    process = subprocess.Popen([str(POPFUSE), "build", "config.yaml"], cwd=tmp_path, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    for line in process.stdout:  # interrupt once the build is under way
        if line.startswith("loaded"):
            break
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130 and err.strip() == "popfuse build: interrupted"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.onnx", "config.yaml"]  # nothing written


def slow_compile_model() -> onnx.ModelProto:
    """Enough nodes that fusing and compiling take a few seconds: time for a Ctrl-C to land."""
    from onnx import TensorProto, helper

    # A build of ~10 s, interrupted within its first: a loaded machine may be slow to deliver the signal.
    depth = 30000
    nodes = [helper.make_node("Relu", [f"v{i}"], [f"v{i + 1}"]) for i in range(depth)]
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("v0", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info(f"v{depth}", TensorProto.FLOAT, [1, 4])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=IR_VERSION)


def test_run_writes_outputs_as_npz_or_one_npy_each(built):
    ran = shell("run", "executable.popef", "--index", "1", "--input", "X=x.npy", "--output", "out.npz", cwd=built)
    assert ran.returncode == 0 and "wrote out.npz" in ran.stdout
    np.testing.assert_array_equal(np.load(built / "out.npz")["O"], [[3, 4, 5, 6]])
    ran = shell("run", "executable.popef", "--input", "graph0/X=x.npy", "--output", "outs", cwd=built)
    assert ran.returncode == 0
    np.testing.assert_array_equal(np.load(built / "outs" / "O.npy"), [[2, 3, 4, 5]])


def test_every_flag_of_every_command_says_what_it_does_and_its_default():
    parser = make_parser()
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert set(commands.choices) == {"build", "dump", "run", "check", "serve", "bench", "completion"}
    for name, sub in commands.choices.items():
        text = sub.format_help()
        for action in sub._actions:
            assert action.help, f"popfuse {name} {action.option_strings or action.dest} has no help"
            if action.option_strings and action.default not in (None, False, [], argparse.SUPPRESS):
                assert f"(default: {action.default})" in " ".join(text.split()), (name, action.dest)
    assert shell("run", "--help", cwd=Path.cwd()).stdout.count("(default:") >= 2


def test_bash_completion_completes_commands_and_flags(tmp_path):
    script = tmp_path / "popfuse.bash"
    ran = shell("completion", "bash", cwd=tmp_path)
    assert ran.returncode == 0
    script.write_text(ran.stdout)
    probe = (f"source {script}; COMP_WORDS=(popfuse bu); COMP_CWORD=1; _shtab_popfuse; echo ${{COMPREPLY[@]}}; "
             f"COMP_WORDS=(popfuse run --it); COMP_CWORD=2; _shtab_popfuse; echo ${{COMPREPLY[@]}}")
    completed = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, timeout=60)
    assert completed.stdout.splitlines() == ["build", "--iterations"], completed.stderr


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
