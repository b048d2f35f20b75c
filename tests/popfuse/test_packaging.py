"""The installed package: one top-level name, every module in the wheel, and the import layers kept.

The wheel is built from the sources as a user's pip would build it, without build isolation so the suite
stays offline, and installed into a folder of its own.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SOURCES = ("popfuse", "fusion", "runtime", "benchmarks")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("wheel")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, work / name)
    for folder in SOURCES:
        shutil.copytree(REPO / folder, work / folder, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(work / "dist"), str(work)], check=True, capture_output=True, timeout=300)
    (built,) = (work / "dist").glob("popfuse-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    site = tmp_path_factory.mktemp("site")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
                   check=True, capture_output=True, timeout=300)
    return site


def run_installed(site: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    # The installed copy comes first on the path; the test environment's packages supply its dependencies.
    env = {**os.environ, "PYTHONPATH": str(site)}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_the_wheel_holds_one_top_level_name_and_every_module(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names} == {"popfuse", "popfuse-0.1.0.dist-info"}
    sources = {
        str(Path("popfuse" if folder == "popfuse" else f"popfuse/{folder}") / path.relative_to(REPO / folder))
        for folder in SOURCES for path in (REPO / folder).rglob("*.py")
    }
    assert sources <= set(names), sorted(sources - set(names))


def test_every_package_folder_is_listed_in_pyproject():
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    folders = {
        ".".join(["popfuse", *([] if folder == "popfuse" else [folder]), *init.parent.relative_to(REPO / folder).parts])
        for folder in SOURCES for init in (REPO / folder).rglob("__init__.py")
    }
    assert folders == listed


def test_the_installed_copy_gives_the_api_and_no_other_top_level_name(installed, tmp_path):
    assert sorted(p.name for p in installed.iterdir() if p.name != "bin") == ["popfuse", "popfuse-0.1.0.dist-info"]
    script = """
import importlib.util, popfuse
print(popfuse.__file__)
assert callable(popfuse.build) and callable(popfuse.fuse) and popfuse.Runner is popfuse.ModelRunner
assert popfuse.RuntimeConfig().validate_io_params and issubclass(popfuse.ArtifactError, popfuse.PopfuseError)
from popfuse import inference as paddle_infer
assert paddle_infer.Config and paddle_infer.create_predictor
print([name for name in ("fusion", "runtime", "benchmarks") if importlib.util.find_spec(name)])
"""
    ran = run_installed(installed, "-c", script, cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    location, top_level = ran.stdout.splitlines()
    assert location.startswith(str(installed)) and top_level == "[]"
    bench = run_installed(installed, "-m", "popfuse", "bench", "--help", cwd=tmp_path)
    assert bench.returncode == 0 and "--smoke" in bench.stdout


def test_the_import_layers_hold(installed, tmp_path):
    lint = Path(sys.executable).with_name("lint-imports")
    ran = subprocess.run([str(lint), str(REPO / "pyproject.toml"), "--no-cache"], cwd=tmp_path,
                         env={**os.environ, "PYTHONPATH": str(installed)}, capture_output=True, text=True, timeout=300)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "Contracts: 4 kept, 0 broken." in ran.stdout
