"""The application layer's promises: the public API under one name, help for the old imports, and a CLI
whose light commands import no engine."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import popfuse

REPO = Path(__file__).resolve().parents[2]


def python(code: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_the_public_api_is_popfuses_own_names():
    from popfuse.fusion import build, fuse
    from popfuse.runtime import Runner

    assert popfuse.build is build and popfuse.fuse is fuse and popfuse.Runner is Runner
    assert sorted(popfuse.__all__) == sorted([*popfuse._API, *popfuse._MODULES])
    assert set(popfuse.__all__) <= set(dir(popfuse))
    with pytest.raises(AttributeError, match="no attribute 'Runnr'"):
        popfuse.Runnr  # noqa: B018


@pytest.mark.parametrize(
    "old, hint",
    [
        ("from runtime import inference as paddle_infer", "from popfuse import inference as paddle_infer"),
        ("from runtime import Runner", "from popfuse import Runner"),
        ("import fusion", "from popfuse import build, fuse"),
        ("import benchmarks", "popfuse bench"),
    ],
)
def test_the_old_imports_say_what_to_import_instead(old, hint, tmp_path):
    # From a checkout's root, the folders are importable under their old top-level names.
    ran = python(old, cwd=REPO)
    assert ran.returncode == 1 and hint in ran.stderr and "ImportError" in ran.stderr
    elsewhere = python(old, cwd=tmp_path)
    assert "No module named" in elsewhere.stderr


def test_dump_and_help_import_no_engine(tmp_path, make_artifact):
    from tests.models import scale_model

    artifact = make_artifact([scale_model()])
    code = f"""
import contextlib, io, sys
from popfuse.cli import main, make_parser
with contextlib.redirect_stdout(io.StringIO()):
    make_parser().format_help()
    assert main(["dump", {str(artifact)!r}]) == 0
    assert main(["dump", "--json", {str(artifact)!r}]) == 0
print(sorted(m for m in sys.modules if m.split(".")[0] in ("onnx", "onnxruntime", "onnx_graphsurgeon")
             or m.startswith(("popfuse.fusion", "popfuse.benchmarks.suites"))))
"""
    ran = python(code, cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == "[]"
