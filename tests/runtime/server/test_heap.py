"""The serving process's C heap: ``--memory-allocator jemalloc`` run as a user runs it (the command, a real
model over tritonclient, /proc), and glibc's freed heap kept for reuse instead of faulted back in on every request."""

from __future__ import annotations

import ctypes.util
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from popfuse.runtime.server.errors import ServerConfigError
from popfuse.runtime.server.heap import JEMALLOC_ENV, find_jemalloc, keep_freed_memory, preload_env, use_allocator
from tests.models import ppocr_input, ppocr_path
from tests.runtime.server.conftest import free_port
from tests.runtime.server.served import POPFUSE, Served, grpc_infer, http_infer

# CI provides one (the ray extra ships it): a skip there would hide a failure.
needs_jemalloc = pytest.mark.skipif(
    find_jemalloc() is None and not os.environ.get("POPFUSE_REQUIRE_JEMALLOC"),
    reason="no jemalloc library here (apt-get install libjemalloc2, or the ray extra)")

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


def _on_jemalloc(pid: int) -> bool:
    return "jemalloc" in Path(f"/proc/{pid}/maps").read_text()


@needs_jemalloc
def test_serve_on_jemalloc_runs_every_worker_on_it_and_answers_the_real_model(ppocr_build):
    served = Served(command=lambda port, grpc_port: [
        str(POPFUSE), "serve", f"ppocr={ppocr_build.popef_path}", "--port", str(port), "--grpc-port",
        str(grpc_port), "--worker-processes", "2", "--threads", "1", "--memory-allocator", "jemalloc"])
    try:
        workers = served.wait_serving()
        # Started again in place (the same pid) with the library preloaded, as are the workers it starts.
        assert all(_on_jemalloc(pid) for pid in [served.process.pid, *workers])
        x = ppocr_input("cls", seed=5)
        (expected,) = ort.InferenceSession(str(ppocr_path("cls")),
                                           providers=["CPUExecutionProvider"]).run(None, {"x": x})
        names = ("x", "save_infer_model/scale_0.tmp_1")
        np.testing.assert_allclose(http_infer(served.url, x, "cls", names), expected, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(grpc_infer(served.grpc_url, x, "cls", names), expected, rtol=1e-4, atol=1e-5)
    finally:
        assert served.stop() == 0


def test_serve_on_the_system_allocator_preloads_nothing(ppocr_build):
    served = Served(command=lambda port, grpc_port: [
        str(POPFUSE), "serve", f"ppocr={ppocr_build.popef_path}", "--port", str(port), "--no-grpc",
        "--worker-processes", "2", "--threads", "1"])
    try:
        assert not any(_on_jemalloc(pid) for pid in [served.process.pid, *served.wait_serving()])
    finally:
        assert served.stop() == 0


def _serve_jemalloc(env: dict[str, str], artifact: Path, popfuse: tuple[str, ...] = (str(POPFUSE),)
                    ) -> subprocess.CompletedProcess:
    return subprocess.run([*popfuse, "serve", str(artifact), "--no-grpc", "--port", str(free_port()),
                           "--memory-allocator", "jemalloc"],
                          capture_output=True, text=True, timeout=60, env={**os.environ, **env})


def test_a_named_library_that_is_missing_fails_the_command_with_its_name(ppocr_build, tmp_path):
    missing = tmp_path / "libjemalloc.so.2"
    ran = _serve_jemalloc({JEMALLOC_ENV: str(missing)}, ppocr_build.popef_path)
    assert ran.returncode == 1
    assert f"{JEMALLOC_ENV}={missing}: no such file" in ran.stderr
    assert "Traceback" not in ran.stderr


@pytest.mark.parametrize("popfuse", [(str(POPFUSE),), (sys.executable, "-m", "popfuse")], ids=["script", "module"])
def test_a_preload_that_does_not_take_fails_once_instead_of_starting_again_and_again(ppocr_build, tmp_path, popfuse):
    # Not a library: the loader ignores it, and the process started again still runs on glibc.
    fake = tmp_path / "libjemalloc.so.2"
    fake.write_text("not a library")
    ran = _serve_jemalloc({JEMALLOC_ENV: str(fake)}, ppocr_build.popef_path, popfuse)
    assert ran.returncode == 1
    assert "but the process does not run on jemalloc" in ran.stderr
    assert ran.stderr.count("starting again") == 1


def test_main_called_from_a_program_starts_popfuse_again_not_the_program(ppocr_build, tmp_path):
    fake = tmp_path / "libjemalloc.so.2"
    fake.write_text("not a library")
    program = ("import sys; print('program'); from popfuse.cli import main; "
               f"sys.exit(main(['serve', {str(ppocr_build.popef_path)!r}, '--no-grpc', '--port', '{free_port()}', "
               "'--memory-allocator', 'jemalloc']))")
    ran = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60,
                         env={**os.environ, JEMALLOC_ENV: str(fake)})
    assert ran.returncode == 1 and "but the process does not run on jemalloc" in ran.stderr
    assert ran.stdout.split() == ["program"]  # run once: what started again was popfuse serve


@needs_jemalloc
def test_glibcs_thresholds_are_left_alone_on_jemalloc():
    probe = "from popfuse.runtime.server.heap import keep_freed_memory; print(keep_freed_memory())"
    ran = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True,
                         env=preload_env(find_jemalloc()))
    assert ran.stdout.split() == ["False"]


def test_an_unknown_allocator_is_refused_with_the_choices():
    with pytest.raises(ServerConfigError, match="'tcmalloc'; expected one of system, jemalloc"):
        use_allocator("tcmalloc", ["serve"])


def test_find_jemalloc_takes_the_named_library_first(tmp_path, monkeypatch):
    named = tmp_path / "libjemalloc.so.2"
    named.write_bytes(b"")
    monkeypatch.setenv(JEMALLOC_ENV, str(named))
    assert find_jemalloc() == str(named)


def test_find_jemalloc_falls_back_to_the_copy_the_ray_extra_ships(monkeypatch):
    if importlib.util.find_spec("ray") is None and not os.environ.get("POPFUSE_REQUIRE_JEMALLOC"):
        pytest.skip("needs the ray extra: pip install 'popfuse[ray]'")
    monkeypatch.delenv(JEMALLOC_ENV, raising=False)
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: None)  # as on a system without jemalloc
    found = find_jemalloc()
    assert found is not None and Path(found).parts[-3:] == ("ray", "core", "libjemalloc.so")
