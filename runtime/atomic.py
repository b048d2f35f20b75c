"""Atomic file writes: a reader sees the old files or all the new ones, never a part.

Each file is written to a temporary file in its folder (named for the target and
the writing process), fsynced, and renamed over the target once every file of
the set is written. A failure or an interrupt (Ctrl-C) removes the temporary
files and the folders the write created; a writer killed outright leaves its
temporary files, which the next write to the same target removes. Files get the
mode the process's umask gives a new file, as ``open()`` would.
"""

from __future__ import annotations

import errno
import os
import re
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

from .errors import OutputError

Chunks = bytes | Iterable[bytes]


def write_atomic(path: str | os.PathLike, chunks: Chunks) -> int:
    """Write ``chunks`` to ``path`` atomically; returns the number of bytes written.

    Raises:
        OutputError: the file cannot be written (disk full, no permission …), naming it.
    """
    return write_all([(path, chunks)])[0]


def write_all(files: Sequence[tuple[str | os.PathLike, Chunks]]) -> list[int]:
    """Write several files so that either all of them are replaced or none is; returns each one's size.

    Raises:
        OutputError: a file cannot be written, naming it; no target has changed.
    """
    created: list[Path] = []
    staged: list[tuple[Path, Path]] = []
    sizes = []
    try:
        for path, chunks in files:
            target = Path(path)
            created += _make_folder(target.parent)
            _remove_stale(target)
            tmp, size = _stage(target, chunks)
            staged.append((tmp, target))
            sizes.append(size)
        for i, (tmp, target) in enumerate(staged):
            _replace(tmp, target)
            staged[i] = (target, target)  # renamed: removed below if a later rename fails
    except BaseException:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
        for folder in reversed(created):
            _remove_empty(folder)
        raise
    return sizes


def _stage(target: Path, chunks: Chunks) -> tuple[Path, int]:
    if isinstance(chunks, (bytes, bytearray, memoryview)):
        chunks = (chunks,)
    try:
        fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.{os.getpid()}.", suffix=".tmp")
    except OSError as e:
        raise _output_error(target, e) from e
    tmp = Path(name)
    written = 0
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o666 & ~_umask())
            for chunk in chunks:
                f.write(chunk)
                written += len(chunk)
            f.flush()
            os.fsync(f.fileno())
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise _output_error(target, e) from e
        raise
    return tmp, written


def _replace(tmp: Path, target: Path) -> None:
    try:
        os.replace(tmp, target)
    except OSError as e:
        raise _output_error(target, e) from e


def _make_folder(folder: Path) -> list[Path]:
    """Create ``folder`` and its missing parents; returns those it created, outermost first."""
    missing = []
    for parent in (folder, *folder.parents):
        if parent.exists():
            break
        missing.append(parent)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _output_error(folder, e, "cannot create the folder") from e
    if not folder.is_dir():
        raise OutputError(f"{folder}: is not a folder; expected a folder to write into")
    return list(reversed(missing))


def _remove_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass  # not empty, or already gone: either way, not ours to remove


def _remove_stale(target: Path) -> None:
    """Remove the temporary files of ``target`` left by writers that were killed (their process is gone)."""
    pattern = re.compile(rf"\.{re.escape(target.name)}\.(\d+)\.[^.]+\.tmp")
    try:
        names = os.listdir(target.parent)
    except OSError:
        return
    for name in names:
        found = pattern.fullmatch(name)
        if found and not _alive(int(found.group(1))):
            (target.parent / name).unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # exists, but another user's: leave its files alone
    return True


def _umask() -> int:
    """The process's umask, read without changing it where Linux says it (``/proc/self/status``)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _output_error(path: Path, error: OSError, action: str = "cannot write") -> OutputError:
    reason = error.strerror or str(error)
    hint = {
        errno.ENOSPC: "; the disk is full: free space or choose another output_dir",
        errno.EDQUOT: "; the disk quota is exhausted",
        errno.EACCES: "; check the folder's permissions",
        errno.EROFS: "; the file system is read-only: choose another output_dir",
    }.get(error.errno, "")
    return OutputError(f"{path}: {action}: {reason}{hint}")
