"""Atomic writes: all files of a set or none, typed errors naming the path, the umask's modes, and no
temporary file outliving the next write."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from popfuse.runtime.atomic import write_all, write_atomic
from popfuse.runtime.errors import OutputError


def test_a_failure_in_the_second_file_leaves_neither(tmp_path):
    (tmp_path / "a").write_bytes(b"old")

    def failing():
        yield b"x"
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_all([(tmp_path / "a", b"new"), (tmp_path / "b", failing())])
    assert sorted(os.listdir(tmp_path)) == ["a"] and (tmp_path / "a").read_bytes() == b"old"


def test_folders_the_write_created_are_removed_when_it_fails(tmp_path):
    def failing():
        raise OSError(28, "No space left on device")
        yield b""

    with pytest.raises(OutputError, match=r"new/deeper/f: cannot write: No space left on device; the disk is full"):
        write_atomic(tmp_path / "new" / "deeper" / "f", failing())
    assert os.listdir(tmp_path) == []


def test_an_os_error_names_the_path(tmp_path):
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(OutputError, match=f"{tmp_path / 'file'}: cannot create the folder"):
        write_atomic(tmp_path / "file" / "out.popef", b"x")


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_files_get_the_mode_the_umask_gives(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        write_atomic(tmp_path / "f", b"x")
    finally:
        os.umask(old)
    assert (tmp_path / "f").stat().st_mode & 0o777 == mode


def test_temporary_files_of_a_killed_writer_are_removed_by_the_next_write(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".model.onnx.{dead.stdout.strip()}.abc123.tmp"
    stale.write_bytes(b"x" * 1000)
    live = tmp_path / f".model.onnx.{os.getppid()}.def456.tmp"  # a writer still running: left alone
    live.write_bytes(b"x")
    other = tmp_path / f".other.onnx.{dead.stdout.strip()}.abc123.tmp"  # another target's: left alone
    other.write_bytes(b"x")
    write_atomic(tmp_path / "model.onnx", b"new")
    assert sorted(os.listdir(tmp_path)) == sorted(["model.onnx", live.name, other.name])


def test_a_full_disk_is_an_output_error_and_leaves_nothing(tiny_disk):
    with pytest.raises(OutputError, match=f"{tiny_disk / 'big'}: cannot write: No space left on device; the disk"):
        write_all([(tiny_disk / "small", b"x"), (tiny_disk / "big", [b"x" * 40_000] * 4)])
    assert os.listdir(tiny_disk) == []
