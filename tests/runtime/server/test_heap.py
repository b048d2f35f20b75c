"""The serving process keeps freed heap for reuse instead of faulting it back in on every request."""

from __future__ import annotations

import subprocess
import sys

import pytest

from popfuse.runtime.server.heap import keep_freed_memory

# In a fresh process: fault counts of a request-sized buffer made and freed again (the second and third time),
# with the server's heap policy set by creating the app, or with the C library's defaults.
PROBE = """
import resource, sys
if sys.argv[1] == "app":
    from popfuse.runtime.server.dataplane import DataPlane
    from popfuse.runtime.server.http import create_app
    from popfuse.runtime.server.settings import ServerSettings

    class Nothing:
        def models(self):
            return []

    create_app(DataPlane(ServerSettings(workers=1), lambda attach: Nothing()))

def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt

buffer = bytearray(16 << 20)
del buffer
start = faults()
for _ in range(2):
    buffer = bytearray(16 << 20)
    del buffer
print(faults() - start)
"""


def _faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not keep_freed_memory(), reason="the C library is not glibc")
def test_the_app_keeps_freed_memory_for_the_next_request():
    # 16 MB zero-filled twice: 4,096 pages each time unless the freed memory is kept.
    assert _faults("defaults") >= 2000
    assert _faults("app") < 100
