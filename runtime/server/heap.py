"""The serving process's C heap: which allocator it runs on, and how glibc's treats freed memory.

**The allocator.** ``popfuse serve --memory-allocator jemalloc`` runs the server
on jemalloc instead of glibc's malloc, as Triton's container (LD_PRELOAD) and
PyTorch's CPU launchers (``--memory-allocator``) offer: the C library's
allocator must be chosen before a process starts, so the server starts itself
again with the library preloaded, and its worker processes inherit it. Each
request down a deep dispatch tree allocates and frees many small objects in
onnxruntime, and where glibc places them after a large fusion has loaded
slows the model (docs/runtime.md, *Latency*).

**Freed memory.** Every request builds, sends and frees buffers of up to a few
megabytes (the request body, the decoded tensors, the response). glibc returns
freed memory at the top of its heap to the system as soon as more than a small
threshold (128 KB to start with) is free, and takes it back, zero-filled, on
the next request. Whether a server pays for that depends on where its buffers
happen to land: measured on the PP-OCR recogniser, one server process
page-faulted about 590 times per request (2.4 MB zeroed each time) and served
10% fewer requests, while another process running the same code never did.
Fixed, larger thresholds make every process keep and reuse that memory.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import importlib.util
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from .errors import ServerConfigError

log = logging.getLogger(__name__)

#: ``--memory-allocator`` choices: the C library's own, or jemalloc preloaded.
ALLOCATORS = ("system", "jemalloc")
#: A jemalloc library to preload, when it is in none of the places ``find_jemalloc`` looks.
JEMALLOC_ENV = "POPFUSE_JEMALLOC"
# The pid of the process started again with jemalloc preloaded, in its environment: should the preload not take
# (a loader that ignores LD_PRELOAD), it then fails instead of starting again and again. A pid, since its children
# inherit the variable.
_STARTED_AGAIN = "POPFUSE_ALLOCATOR_PRELOADED"

# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# Freed heap kept for reuse, at most; glibc's largest mmap threshold on 64-bit systems.
KEPT_BYTES = 256 << 20
_MMAP_BYTES = 32 << 20


@functools.cache
def keep_freed_memory() -> bool:
    """Have the C allocator keep up to ``KEPT_BYTES`` of freed heap for reuse, once per process.

    Returns whether it applied: False where the C library is not glibc.
    """
    if jemalloc_active():
        return False  # mallopt would tune glibc's allocator, which this process does not use
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_BYTES)) and bool(mallopt(_M_TRIM_THRESHOLD, KEPT_BYTES))


def jemalloc_active() -> bool:
    """Whether this process allocates with jemalloc (which alone exports ``mallctl``)."""
    return hasattr(ctypes.CDLL(None), "mallctl")


def find_jemalloc() -> str | None:
    """The jemalloc library to preload: ``$POPFUSE_JEMALLOC``, else the system's (Debian and Ubuntu:
    ``apt-get install libjemalloc2``), else the copy the ray extra ships; None where there is none.

    Raises:
        ServerConfigError: ``$POPFUSE_JEMALLOC`` names no file.
    """
    named = os.environ.get(JEMALLOC_ENV)
    if named:
        if not Path(named).is_file():
            raise ServerConfigError(f"{JEMALLOC_ENV}={named}: no such file; expected the path of a jemalloc "
                                    f"library (libjemalloc.so.2), or unset it to look in the system's")
        return named
    system = ctypes.util.find_library("jemalloc")
    if system:
        return system
    ray = importlib.util.find_spec("ray")  # its spec only: importing Ray takes seconds
    for folder in (ray.submodule_search_locations if ray else None) or []:
        bundled = Path(folder) / "core" / "libjemalloc.so"
        if bundled.is_file():
            return str(bundled)
    return None


def preload_env(library: str) -> dict[str, str]:
    """This process's environment with ``library`` first in ``LD_PRELOAD``, for a process started from it."""
    return {**os.environ, "LD_PRELOAD": " ".join(filter(None, [library, os.environ.get("LD_PRELOAD")]))}


def use_allocator(name: str, argv: Sequence[str]) -> None:
    """Make this process, ``popfuse ARGV``, run on allocator ``name`` (one of ``ALLOCATORS``) before it serves.

    ``system`` keeps whatever the process started with. ``jemalloc``, unless already preloaded, runs
    ``python -m popfuse ARGV`` in this process's place (the same pid) with the library in ``LD_PRELOAD``: this
    call then does not return.

    Raises:
        ServerConfigError: jemalloc is asked for off Linux, or no library is found, or its preload did not take.
    """
    if name not in ALLOCATORS:
        raise ServerConfigError(f"unknown memory allocator {name!r}; expected one of {', '.join(ALLOCATORS)}")
    if name == "system" or jemalloc_active():
        return
    if sys.platform != "linux":
        raise ServerConfigError(f"--memory-allocator jemalloc preloads the library with LD_PRELOAD, which only "
                                f"Linux's loader reads (this is {sys.platform}); serve with --memory-allocator system")
    if os.environ.get(_STARTED_AGAIN) == str(os.getpid()):  # this very process was started again with it
        raise ServerConfigError(f"started again with {os.environ.get('LD_PRELOAD')!r} in LD_PRELOAD, but the "
                                f"process does not run on jemalloc; check that the library is jemalloc, or serve "
                                f"with --memory-allocator system")
    library = find_jemalloc()
    if library is None:
        raise ServerConfigError(f"--memory-allocator jemalloc: no jemalloc library found; install one "
                                f"(Debian and Ubuntu: apt-get install libjemalloc2), set {JEMALLOC_ENV} to its "
                                f"path, or serve with --memory-allocator system")
    log.info("starting again with %s preloaded", library)
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(sys.executable, [sys.executable, "-m", "popfuse", *argv],
                  {**preload_env(library), _STARTED_AGAIN: str(os.getpid())})
    except OSError as e:
        raise ServerConfigError(f"cannot start {sys.executable!r} again with {library} preloaded ({e.strerror or e}); "
                                f"serve with --memory-allocator system") from e
