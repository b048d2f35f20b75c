"""``popfuse serve --worker-processes``: one artifact served from several processes behind one HTTP port and one
gRPC port, run as a user runs it (the command, tritonclient over new connections, signals, /proc)."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from tritonclient.utils import InferenceServerException

from popfuse.fusion import compile_artifact, fuse_models
from popfuse.runtime.artifact import write_artifact
from popfuse.runtime.server.workers import Restarts
from tests.models import if_model, ppocr_input, ppocr_path, scale_model, slow_model
from tests.runtime.server.conftest import free_port, named
from tests.runtime.server.served import POPFUSE, Served, grpc_infer, http_infer


@pytest.fixture(scope="module")
def artifact(tmp_path_factory) -> Path:
    """Three toy models in one artifact: scale (O = 2X + [0 1 2 3]), branch (O = X + 1 if sum(X) > 0, else X - 1)
    and slow (tenths of a second per request)."""
    path = tmp_path_factory.mktemp("workers") / "toys.popef"
    models = [scale_model(2.0), if_model(), slow_model(steps=60, rows=512)]
    fused = fuse_models(models, named("scale", "branch", "slow"))
    write_artifact(path, compile_artifact(fused, "onnxruntime-cpu"))
    return path


@pytest.fixture(scope="module")
def server(artifact, ppocr_build):
    """One server of two worker processes for the module, over the toys and the PP-OCR artifact (det, rec, cls);
    the last test stops it."""
    served = Served(artifact, f"ppocr={ppocr_build.popef_path}")
    try:
        served.wait_serving()
        yield served
    finally:
        if served.process.poll() is None:
            served.process.kill()
            served.process.wait()


def scale_expected(x: np.ndarray) -> np.ndarray:
    return 2 * x + np.arange(4, dtype=np.float32)


def branch_expected(x: np.ndarray) -> np.ndarray:
    return x + 1 if x.sum() > 0 else x - 1


def successes(url: str, workers: int) -> dict[str, dict[str, int]]:
    """``nv_inference_request_success`` by worker and model, from scrapes over new connections (each reaches one
    worker) until every worker has answered one."""
    seen: dict[str, dict[str, int]] = {}
    for _ in range(200):
        with urllib.request.urlopen(f"http://{url}/metrics", timeout=10) as response:
            text = response.read().decode()
        rows = re.findall(r'^nv_inference_request_success\{model="(\w+)",version="1",worker="(\d+)"\} (\d+)$', text,
                          re.M)
        assert rows, text
        for model, worker, count in rows:
            seen.setdefault(worker, {})[model] = int(count)
        if len(seen) == workers:
            return seen
    raise AssertionError(f"only workers {sorted(seen)} answered 200 scrapes")


def listeners(port: int) -> int:
    """TCP sockets listening on ``port`` now, IPv4 and IPv6 (Linux)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            count += state == "0A" and int(local.rsplit(":", 1)[1], 16) == port
    return count


def running(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_requests_over_new_connections_reach_every_worker_over_both_protocols(server):
    rng = np.random.default_rng(0)
    sent = {"scale": 0, "branch": 0}
    for _ in range(10):  # rounds, until every worker has answered both protocols
        for _ in range(8):
            x = rng.standard_normal((1, 4)).astype(np.float32)
            np.testing.assert_allclose(http_infer(server.url, x), scale_expected(x), rtol=1e-6)
            y = rng.standard_normal((1, 3)).astype(np.float32)
            np.testing.assert_allclose(grpc_infer(server.grpc_url, y), branch_expected(y), rtol=1e-6)
            sent["scale"] += 1
            sent["branch"] += 1
        counts = successes(server.url, 2)
        if all(counts[w].get(model, 0) > 0 for w in counts for model in sent):
            break
    assert all(counts[w][model] > 0 for w in ("0", "1") for model in sent), counts
    for model, n in sent.items():
        assert sum(counts[w][model] for w in counts) == n  # each request answered once, by one worker


def test_every_worker_answers_the_real_model_as_a_plain_session_does(server):
    x = ppocr_input("cls", seed=3)
    (expected,) = ort.InferenceSession(str(ppocr_path("cls")), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    names = ("x", "save_infer_model/scale_0.tmp_1")  # the classifier's own input and output
    for _ in range(10):  # rounds, until both workers have answered it
        for _ in range(4):
            np.testing.assert_allclose(http_infer(server.url, x, "cls", names), expected, rtol=1e-4, atol=1e-5)
            np.testing.assert_allclose(grpc_infer(server.grpc_url, x, "cls", names), expected, rtol=1e-4, atol=1e-5)
        counts = successes(server.url, 2)
        if all(counts[w].get("cls", 0) > 0 for w in counts):
            break
    assert all(counts[w]["cls"] > 0 for w in ("0", "1")), counts


def test_the_supervisor_holds_no_engine_and_the_workers_map_each_cache_entry(server):
    def mapped(pid: int) -> set[str]:
        return {line.split(maxsplit=5)[5] for line in Path(f"/proc/{pid}/maps").read_text().splitlines()
                if len(line.split(maxsplit=5)) == 6}

    parent = mapped(server.process.pid)
    assert not [f for f in parent if "onnxruntime" in f]
    cache = Path(os.environ["POPFUSE_CACHE_DIR"])
    entries = [mapped(pid) for pid in server.children()]
    assert len(entries) == 2
    shared = {f for f in entries[0] & entries[1] if Path(f).parent == cache and f.endswith(".ort")}
    assert len(shared) == 2  # each artifact's executable with its weights, mapped by both: its pages are shared


def test_load_and_unload_are_refused_with_several_workers_and_the_index_stays_readable(server):
    http = triton_http.InferenceServerClient(server.url)
    grpc = triton_grpc.InferenceServerClient(server.grpc_url)
    for call in (http.load_model, http.unload_model):
        with pytest.raises(InferenceServerException) as refused:
            call("toys")
        assert refused.value.status() == "400"
        assert "explicit model load / unload is not allowed: this server runs 2 worker processes" in str(refused.value)
        assert "serve with --worker-processes 1" in str(refused.value)
    for call in (grpc.load_model, grpc.unload_model):
        with pytest.raises(InferenceServerException) as refused:
            call("toys")
        assert refused.value.status() == "StatusCode.FAILED_PRECONDITION"
        assert "explicit model load / unload is not allowed" in refused.value.message()
    served = {"toys", "scale", "branch", "slow", "ppocr", "det", "rec", "cls"}
    assert {m["name"]: m["state"] for m in http.get_model_repository_index()} == dict.fromkeys(served, "READY")
    assert {m.name for m in grpc.get_model_repository_index().models} == served
    x = np.ones((1, 4), np.float32)
    np.testing.assert_allclose(http_infer(server.url, x), scale_expected(x))  # nothing was unloaded


def test_a_killed_worker_is_restarted_while_the_ports_keep_answering(server):
    before = server.children()
    lines = len(server.lines)
    listening = listeners(server.grpc_port)
    os.kill(before[1], signal.SIGKILL)
    # Until the killed process's gRPC listener is closed, the kernel may still queue a new connection there, to be
    # reset (SO_REUSEPORT; docs/server.md, "Worker processes"); from then on none is lost.
    while listeners(server.grpc_port) == listening:
        time.sleep(0.005)
    x = np.full((1, 4), 0.5, np.float32)
    y = np.full((1, 3), -0.5, np.float32)
    deadline = time.monotonic() + 60
    while server.children() == before or len(server.children()) < 2:  # answered throughout the restart
        np.testing.assert_allclose(http_infer(server.url, x), scale_expected(x))
        np.testing.assert_allclose(grpc_infer(server.grpc_url, y), branch_expected(y))
        assert time.monotonic() < deadline, "".join(server.lines)
    server.wait_for_line(rf"worker 1 \(pid {before[1]}\) was killed by SIGKILL; restarting it in 0.5 s", lines)
    pids = server.wait_serving(lines)
    assert pids[0] == before[0] and pids[1] != before[1] and sorted(server.children()) == sorted(pids)
    np.testing.assert_allclose(http_infer(server.url, x), scale_expected(x))


def test_sigterm_drains_every_worker_and_exits_0(server):
    workers = server.children()
    x = np.ones((512, 512), np.float32)
    answers: list[np.ndarray] = []
    clients = [threading.Thread(target=lambda: answers.append(http_infer(server.url, x, "slow"))) for _ in range(8)]
    for client in clients:
        client.start()
    time.sleep(0.1)  # the requests are in flight, spread over the workers
    answered_before = len(answers)
    assert server.stop() == 0, "".join(server.lines)
    for client in clients:
        client.join(timeout=60)
    assert answered_before < 8 and len(answers) == 8  # every request in flight at SIGTERM was answered
    for answer in answers:
        np.testing.assert_allclose(answer, np.full_like(x, 0.999**60), rtol=1e-4)
    assert not [pid for pid in workers if running(pid)]
    assert "SIGTERM: stopping 2 worker processes" in "".join(server.lines)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", server.port), timeout=2)


def test_workers_whose_supervisor_is_killed_drain_and_exit(artifact):
    served, workers = Served(artifact), []
    try:
        workers = served.wait_serving()
        served.process.kill()
        served.process.wait()
        deadline = time.monotonic() + 60
        while [pid for pid in workers if running(pid)]:
            assert time.monotonic() < deadline, "".join(served.lines)
            time.sleep(0.05)
        served._reader.join(timeout=10)  # the workers held the supervisor's stderr until they exited
        assert "worker 1: the supervisor is gone; stopping" in "".join(served.lines)
    finally:
        for pid in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_a_worker_that_fails_to_start_fails_the_command_with_its_one_line_error(artifact, tmp_path):
    bad = tmp_path / "bad.popef"
    bad.write_bytes(artifact.read_bytes()[:1000])
    errors = []
    for processes in ("1", "2"):
        ran = subprocess.run([str(POPFUSE), "serve", str(bad), "--port", str(free_port()), "--grpc-port",
                              str(free_port()), "--worker-processes", processes],
                             capture_output=True, text=True, timeout=60)
        assert ran.returncode == 1
        errors.append(ran.stderr)
    assert errors[1] == errors[0]  # the single process's error, word for word
    assert errors[1].startswith("popfuse serve: error: artifact 'bad' failed to load: ") and "truncated" in errors[1]
    assert errors[1].count("\n") == 1


def test_a_busy_port_fails_the_command_before_any_worker_starts(artifact):
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        for flag, what in (("--grpc-port", "gRPC"), ("--port", "HTTP")):
            ports = {"--port": str(free_port()), "--grpc-port": str(free_port()), flag: str(port)}
            ran = subprocess.run([str(POPFUSE), "serve", str(artifact), "--worker-processes", "2",
                                  *(item for pair in ports.items() for item in pair)],
                                 capture_output=True, text=True, timeout=60)
            assert ran.returncode == 1
            assert ran.stderr == (f"popfuse serve: error: cannot listen for {what} on 127.0.0.1:{port}: Address "
                                  f"already in use; choose another {flag} (or --host)\n")


def test_a_worker_that_keeps_crashing_stops_the_server_with_an_error(artifact):
    def supervisor(port: int, grpc_port: int) -> list[str]:
        """The Python API's supervisor, with a restart policy that gives up at the second quick crash."""
        return [sys.executable, "-c", (
            "import logging\n"
            "from popfuse.runtime.server.settings import ServerSettings\n"
            "from popfuse.runtime.server.workers import Restarts, Supervisor\n"
            "logging.basicConfig(level=logging.INFO, format='%(message)s')\n"
            f"settings = ServerSettings(port={port}, grpc_port={grpc_port}, worker_processes=2, workers=1, "
            "intra_op_num_threads=1)\n"
            f"Supervisor([{str(artifact)!r}], settings, lambda: Restarts(max_crashes=2, first_delay_s=0.05)).run()\n"
        )]

    served = Served(command=supervisor)
    try:
        first = served.wait_serving()
        lines = len(served.lines)
        os.kill(served.children()[1], signal.SIGKILL)
        served.wait_serving(lines)  # restarted once
        os.kill(served.children()[1], signal.SIGKILL)
        assert served.process.wait(timeout=60) == 1
        assert "WorkerError: worker 1 crashed 2 times within 60 s (the last time it was killed by SIGKILL); " \
               "stopping the server" in "".join(served.lines)
        assert not running(first[0])  # worker 0, which was serving, was stopped too
    finally:
        if served.process.poll() is None:
            served.process.kill()


def test_restarts_wait_longer_after_each_crash_and_stop_at_a_crash_loop():
    restarts = Restarts(max_crashes=5, window_s=60, first_delay_s=0.5, max_delay_s=3)
    assert [restarts.crashed(t) for t in (0, 1, 2, 3)] == [0.5, 1.0, 2.0, 3.0]
    assert restarts.crashed(4) is None  # the fifth within a minute
    spaced = Restarts(max_crashes=2, window_s=60)
    assert [spaced.crashed(t) for t in (0, 61, 122)] == [0.5, 0.5, 0.5]  # crashes a window apart never add up
