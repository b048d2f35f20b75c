"""Every command and snippet in README.md and docs/ works as written, as onnx-graphsurgeon's suite runs its
examples: the docs cannot rot.

Each document's fenced blocks run in order, in a copy of the repository where the README's first command
has run (the examples built; the environment is the suite's own, activated): ``sh`` blocks in bash, ``python``
blocks in Python, ``yaml`` build files built and model files loaded. A block may be preceded by a directive
in an HTML comment, invisible on the rendered page:

- ``<!-- doc-test: skip: REASON -->``: not run, for a stated reason (an install the test environment has
  already made, a run that takes minutes and that another test runs at smoke size).
- ``<!-- doc-test: background until URL -->``: started in the background, and the next blocks run once URL
  answers 200; stopped with SIGTERM after the document's last block, and it must then exit with status 0.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
DOCUMENTS = ["README.md", *sorted(str(p.relative_to(REPO)) for p in (REPO / "docs").glob("*.md"))]
_FENCE = re.compile(r"^( *)```(\w*)[^\n]*\n(.*?)^\1```", re.M | re.S)
_DIRECTIVE = re.compile(r"<!-- doc-test: (.*?) -->\s*$")


@dataclass(frozen=True)
class Block:
    language: str
    code: str
    line: int
    directive: str | None


def blocks(document: str) -> list[Block]:
    """The fenced blocks of ``document``, with the directive written just before each, if any."""
    text = (REPO / document).read_text()
    found = []
    for match in _FENCE.finditer(text):
        before = text[: match.start()].rstrip().splitlines()
        directive = _DIRECTIVE.search(before[-1]) if before else None
        code = "\n".join(line[len(match.group(1)):] for line in match.group(3).splitlines())
        found.append(Block(match.group(2), code, text[: match.start()].count("\n") + 1,
                           directive.group(1) if directive else None))
    return found


@pytest.fixture(scope="session")
def workspace(tmp_path_factory) -> Path:
    """A copy of the repository after the README's first command: the examples built, the environment
    there as `.venv` (the suite's own)."""
    root = tmp_path_factory.mktemp("docs") / "popfuse"
    shutil.copytree(REPO, root, ignore=shutil.ignore_patterns(".venv", ".git", "__pycache__", "*.onnx", "*.popef",
                                                                "build", "*.egg-info", ".pytest_cache"))
    os.symlink(sys.prefix, root / ".venv")
    for script in ("compile.py", "run.py"):
        subprocess.run([sys.executable, f"examples/model_fusion/{script}"], cwd=root, check=True,
                       capture_output=True, timeout=300)
    return root


def environment() -> dict[str, str]:
    """The shell of a user who ran `source .venv/bin/activate`."""
    bin_dir = str(Path(sys.executable).parent)
    return {**os.environ, "VIRTUAL_ENV": sys.prefix, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}


def run_block(block: Block, cwd: Path) -> None:
    where = f"line {block.line}"
    # An editable install run here would point the suite's own environment at this temporary copy.
    assert "pip install -e" not in block.code, f"{where}: put the install in a block of its own, skipped"
    if block.language in ("sh", "bash", "console"):
        ran = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", block.code], cwd=cwd, env=environment(),
                             capture_output=True, text=True, timeout=300)
    elif block.language == "python":
        ran = subprocess.run([sys.executable, "-c", block.code], cwd=cwd, env=environment(),
                             capture_output=True, text=True, timeout=300)
    elif block.language == "yaml":
        check_yaml(block, cwd)
        return
    else:
        return  # text, tables of output: nothing to run
    assert ran.returncode == 0, f"{where}: exit {ran.returncode}\n{ran.stdout[-2000:]}\n{ran.stderr[-2000:]}"


def check_yaml(block: Block, cwd: Path) -> None:
    """A build file builds (next to the example's models, which it names); a server's model file loads; a Ray
    catalog is read and checked (its paths relative to the repository's root)."""
    from popfuse.fusion import build
    from popfuse.runtime.scaleout.catalog import load_catalog
    from popfuse.runtime.server.settings import load_model_config

    data = yaml.safe_load(block.code)
    if "model_fusion" in data:
        path = cwd / "examples" / "model_fusion" / f"doc-line-{block.line}.yaml"
        path.write_text(block.code)
        build(path)
    elif "models" in data:
        path = cwd / f"doc-line-{block.line}.yaml"
        path.write_text(block.code)
        load_model_config(path)
    elif "artifacts" in data:
        path = cwd / f"doc-line-{block.line}.yaml"
        path.write_text(block.code)
        load_catalog(path)
    else:
        raise AssertionError(f"line {block.line}: a YAML block that is neither a build file, a model file nor a "
                             "catalog")


def start_background(block: Block, url: str, cwd: Path) -> subprocess.Popen:
    process = subprocess.Popen(["bash", "-c", f"exec {block.code.strip()}"], cwd=cwd, env=environment(),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"line {block.line} ended early: {process.communicate()[1][-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return process
        except OSError:
            time.sleep(0.2)
    process.kill()
    raise AssertionError(f"line {block.line}: {url} did not answer within 60 s")


@pytest.mark.parametrize("document", DOCUMENTS)
def test_every_block_runs_as_written(document, workspace):
    found = blocks(document)
    if document == "README.md":
        found = found[1:]  # the two opening commands: .ci/run runs them in a clean clone
    background: list[tuple[Block, subprocess.Popen]] = []
    try:
        for block in found:
            directive = block.directive or ""
            if directive.startswith("skip"):
                assert re.match(r"skip: \S", directive), f"line {block.line}: a skip must give its reason"
                continue
            if directive.startswith("background until "):
                background.append((block, start_background(block, directive.split()[-1], workspace)))
                continue
            assert not directive, f"line {block.line}: unknown doc-test directive {directive!r}"
            run_block(block, workspace)
    finally:
        for block, process in background:
            process.send_signal(signal.SIGTERM)
            try:
                status = process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                raise
            assert status == 0, f"line {block.line} exited with {status}: {process.communicate()[1][-2000:]}"


def test_every_fenced_block_is_seen():
    # A fence the parser missed would be a block never run.
    for document in DOCUMENTS:
        text = (REPO / document).read_text()
        assert len(blocks(document)) * 2 == len(re.findall(r"^ *```", text, re.M)), document
