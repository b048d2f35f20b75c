"""The bundled examples run as written and print the expected results (the README runs the PP-OCR one:
tests/test_docs.py)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run(script, *args, cwd):
    command = [str(script)] if Path(script).name == "popfuse" else [sys.executable, str(script)]
    return subprocess.run([*command, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_poprt_model_fusion_example(tmp_path):
    folder = tmp_path / "model_fusion"
    shutil.copytree(EXAMPLES / "model_fusion", folder, ignore=shutil.ignore_patterns("*.onnx", "*.popef"))
    built = run(folder / "compile.py", cwd=tmp_path)
    assert built.returncode == 0, built.stderr
    assert (folder / "executable.popef").is_file()
    ran = run(folder / "run.py", cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    assert "graph0/O: [3. 3.]" in ran.stdout
    assert "graph1/O: [[0.  1.5 2. ]]" in ran.stdout
    assert ran.stderr == ""


def test_shipped_config_builds(tmp_path):
    shutil.copytree(EXAMPLES / "model_fusion", tmp_path / "examples" / "model_fusion",
                    ignore=shutil.ignore_patterns("*.onnx", "*.popef"))
    shutil.copytree(EXAMPLES.parent / "configs", tmp_path / "configs")
    assert run(tmp_path / "examples" / "model_fusion" / "compile.py", cwd=tmp_path).returncode == 0
    (tmp_path / "examples" / "model_fusion" / "executable.popef").unlink()
    built = run(Path(sys.executable).with_name("popfuse"), "build", "configs/poprt_model_fusion.yaml", cwd=tmp_path)
    assert built.returncode == 0, built.stderr
    assert (tmp_path / "examples" / "model_fusion" / "executable.popef").is_file()


def test_paddle_inference_example():
    ran = run(EXAMPLES / "paddle_inference" / "classify.py", cwd=EXAMPLES.parent)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    lines = ran.stdout.splitlines()
    assert lines[0].startswith("upright: class 0 (0 degrees)")
    assert lines[1].startswith("flipped: class 1 (180 degrees)")
    assert "fused artifact inputs: ['graph0/x', 'graph1/x']" in ran.stdout
    assert lines[-1].startswith("fused cls: class 0")
