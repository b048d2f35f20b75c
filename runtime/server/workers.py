"""One set of artifacts served from several worker processes, behind one HTTP port and one gRPC port.

``popfuse serve --worker-processes K``, run as gunicorn's arbiter and uvicorn's ``--workers`` supervisor run
theirs, adapted to workers that hold onnxruntime sessions:

- **One HTTP port.** The supervisor (this process) binds the HTTP socket once and every worker inherits it and
  listens on it: the kernel gives each new connection to one of them. The supervisor only binds: the first
  worker to serve starts the listening, so no connection waits on a server that is still loading.
- **One gRPC port.** grpc.aio serves only sockets it bound itself, so every worker binds the gRPC port with
  SO_REUSEPORT, and the kernel spreads new connections over them by their addresses. The supervisor checks
  first that nothing holds the port, then keeps it bound (never listening) with SO_REUSEPORT, so that no
  program that does not share the port can take it while workers restart.
- **Shared pages.** Worker 0 starts alone and loads and warms every artifact, which writes each executable's
  cache entry; the others start once it serves, and map those entries and the artifacts: every worker shares
  the executables' and the weights' pages.
- **Fresh interpreters, not fork.** A worker is ``python -m popfuse.runtime.server.workers``, started with
  nothing of the supervisor's but its two sockets. A process holding onnxruntime sessions must never fork (the
  child would keep their thread pools' locks and none of their threads), nor may grpc's core once started. The
  supervisor touches neither, so forking it would be safe, but would share little: the modules a fork
  inherits are Python objects, made private page by page as their reference counts are written. The pages
  that matter (the libraries, the artifacts, the cache) belong to files, and every process that maps a file
  shares them however it was started. A fresh worker pays about a second of imports, at start only.
- **Signals.** SIGTERM or SIGINT to the supervisor goes on to every worker as SIGTERM; each drains as one
  server does (``serve.py``) and the supervisor returns once all have exited, raising if one did not exit
  cleanly. A second SIGINT goes on as SIGINT, on which the workers stop without waiting (uvicorn's rule); a
  worker still running ``graceful_timeout_s`` + ``STOP_MARGIN_S`` after the first is killed.
- **Failures.** A worker that fails to start (an artifact that does not load, a port it cannot bind) stops the
  server with that worker's one-line error. One that dies while serving is restarted after a delay that
  doubles with each recent crash (``Restarts``); one that keeps crashing stops the server with an error that
  says so. A worker whose supervisor is gone drains and exits.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import json
import logging
import os
import pickle
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ..backends import ENGINE_LOGS
from ..errors import PopfuseError
from .errors import ServerConfigError, WorkerError
from .repository import Artifacts
from .serve import Server, build, fit_open_files
from .settings import ServerSettings

log = logging.getLogger(__name__)

#: How long past ``graceful_timeout_s`` a stopping worker may take before it is killed.
STOP_MARGIN_S = 10.0


@dataclass
class Restarts:
    """When a worker that died starts again: after a delay that doubles with each crash within ``window_s``,
    and not at all once ``max_crashes`` fall within it (a crash loop, which restarting will not mend)."""

    max_crashes: int = 5
    window_s: float = 60.0
    first_delay_s: float = 0.5
    max_delay_s: float = 10.0
    _crashes: collections.deque = field(default_factory=collections.deque, repr=False)

    def crashed(self, now: float) -> float | None:
        """Count a crash at ``now`` (``time.monotonic()``); returns the seconds to wait before the restart, or
        None when this crash is the ``max_crashes``-th within the window."""
        self._crashes.append(now)
        while self._crashes[0] < now - self.window_s:
            self._crashes.popleft()
        if len(self._crashes) >= self.max_crashes:
            return None
        return min(self.first_delay_s * 2 ** (len(self._crashes) - 1), self.max_delay_s)


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker process is sent when it starts (pickled over its channel to the supervisor).

    Attributes:
        artifacts: What to serve.
        settings: How, with the worker's own ``worker_index``.
        log_level: The supervisor's logging level.
        log_formatter: The formatter of the supervisor's log lines; None: Python's default handling.
        engine_logs: Whether onnxruntime's own log lines are shown.
    """

    artifacts: Artifacts
    settings: ServerSettings
    log_level: int
    log_formatter: logging.Formatter | None
    engine_logs: bool

    def configure_logging(self) -> None:
        """Log as the supervisor does, each line saying which worker wrote it."""
        root = logging.getLogger()
        root.setLevel(self.log_level)
        if self.log_formatter is not None:
            handler = logging.StreamHandler()
            handler.setFormatter(self.log_formatter)
            handler.addFilter(_Prefix(f"worker {self.settings.worker_index}: "))
            root.addHandler(handler)
        ENGINE_LOGS.shown = self.engine_logs


class _Prefix(logging.Filter):
    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = f"{self.prefix}{record.msg}"
        return True


def describe(status: int) -> str:
    """How a process ended, from its return code (negative: the signal that killed it)."""
    if status >= 0:
        return f"exited with status {status}"
    try:
        return f"was killed by {signal.Signals(-status).name}"
    except ValueError:
        return f"was killed by signal {-status}"


class Supervisor:
    """Serves ``artifacts`` from ``settings.worker_processes`` worker processes until SIGTERM or SIGINT.

    Args:
        artifacts: What every worker serves.
        settings: How every worker serves it, and how many workers there are.
        restarts: Makes each worker's restart policy.
    """

    def __init__(self, artifacts: Artifacts, settings: ServerSettings, restarts: Callable[[], Restarts] = Restarts):
        self.artifacts, self.settings = artifacts, settings
        self.workers = [_Worker(self, i, restarts()) for i in range(settings.worker_processes)]
        self.http_socket: socket.socket | None = None
        self._held: list[socket.socket] = []
        self.stopping = asyncio.Event()  # set on the first signal, or when a worker fails
        self.first_started = asyncio.Event()  # set once worker 0 serves, or failed to
        self.forced = False  # stopped without waiting for in-flight requests (a second SIGINT)

    def run(self) -> None:
        """Bind the ports, start the workers (worker 0 first), keep them running, and stop them all on SIGTERM
        or SIGINT; returns once every worker has exited cleanly.

        Raises:
            ServerConfigError: a port cannot be bound.
            WorkerError: a worker failed to start (its own error), kept crashing, or did not stop cleanly.
        """
        try:
            self.http_socket = _bind("HTTP", self.settings.host, self.settings.port, "--port")
            self._held.append(self.http_socket)
            if self.settings.grpc_port is not None:
                _bind("gRPC", self.settings.host, self.settings.grpc_port, "--grpc-port").close()
                self._held.append(_bind("gRPC", self.settings.host, self.settings.grpc_port, "--grpc-port",
                                        reuse_port=True))
            asyncio.run(self._run())
        finally:
            self._release()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)
        tasks = [asyncio.ensure_future(worker.life()) for worker in self.workers]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            errors = [task.exception() for task in done if task.exception() is not None]
            if errors:
                self.stop()
                await asyncio.wait(tasks)
                raise errors[0]
        finally:
            self.stop()  # the supervisor's own failure too must not leave workers behind
            await asyncio.gather(*(worker.exited() for worker in self.workers))
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
        unclean = [f"worker {w.index} (pid {w.process.pid}) {describe(w.process.returncode)}"
                   for w in self.workers if w.serving and w.process.returncode != 0 and not self.forced]
        if unclean:
            raise WorkerError(f"stopping the server: {'; '.join(unclean)}")

    def serving(self) -> None:
        """Called by each worker once it serves: the line that says the server is up, once all are."""
        if all(w.serving for w in self.workers):
            host, grpc_port = self.settings.host, self.settings.grpc_port
            host = f"[{host}]" if ":" in host else host
            grpc = "" if grpc_port is None else f" and gRPC on {host}:{grpc_port}"
            log.info("serving HTTP on http://%s:%d%s from %d worker processes (pids %s)", host, self.settings.port,
                     grpc, len(self.workers), ", ".join(str(w.process.pid) for w in self.workers))

    def _on_signal(self, sig: signal.Signals) -> None:
        if not self.stopping.is_set():
            log.info("%s: stopping %d worker processes", sig.name, len(self.workers))
            self.stop()
        elif sig == signal.SIGINT:  # a second Ctrl-C: stop without waiting, as one server does
            self.forced = True
            for worker in self.workers:
                worker.send(signal.SIGINT)

    def stop(self) -> None:
        """Stop intake, and send SIGTERM to every worker (once); kill those still running after the grace."""
        if self.stopping.is_set():
            return
        self.stopping.set()
        self._release()  # every worker closes its listening sockets too: new connections are refused
        for worker in self.workers:
            worker.send(signal.SIGTERM)
        asyncio.get_running_loop().call_later(self.settings.graceful_timeout_s + STOP_MARGIN_S, self._kill)

    def _kill(self) -> None:
        for worker in self.workers:
            if worker.send(signal.SIGKILL):
                log.warning("worker %d (pid %d) did not stop within %.0f s of SIGTERM; killed it", worker.index,
                            worker.process.pid, self.settings.graceful_timeout_s + STOP_MARGIN_S)

    def _release(self) -> None:
        while self._held:
            self._held.pop().close()

    async def stopped_within(self, seconds: float) -> bool:
        """Wait up to ``seconds``; returns whether the server began stopping meanwhile."""
        try:
            await asyncio.wait_for(self.stopping.wait(), seconds)
        except TimeoutError:
            return False
        return True


class _Worker:
    """One worker's place: its process now, and its restarts."""

    def __init__(self, supervisor: Supervisor, index: int, restarts: Restarts):
        self.supervisor, self.index, self.restarts = supervisor, index, restarts
        self.process: asyncio.subprocess.Process | None = None
        self.serving = False
        self._channel: asyncio.StreamWriter | None = None

    async def life(self) -> None:
        """Start this worker (worker 0 first, the others once it serves), and start it again whenever it dies,
        until the server stops.

        Raises:
            WorkerError: it failed to start, or crashed too often.
        """
        sup = self.supervisor
        if self.index == 0:
            try:
                started = await self.start()
            except BaseException:
                sup.stop()  # before the others wake: they must not start
                raise
            finally:
                sup.first_started.set()
        else:
            await sup.first_started.wait()
            started = await self.start()
        while started:
            status = await self.process.wait()
            if sup.stopping.is_set():
                return
            self.serving = False
            delay = self.restarts.crashed(time.monotonic())
            if delay is None:
                raise WorkerError(
                    f"worker {self.index} crashed {self.restarts.max_crashes} times within "
                    f"{self.restarts.window_s:.0f} s (the last time it {describe(status)}); stopping the server. "
                    "The log lines above say why it died"
                )
            log.warning("worker %d (pid %d) %s; restarting it in %.1f s", self.index, self.process.pid,
                        describe(status), delay)
            if await sup.stopped_within(delay):
                return
            started = await self.start()

    async def start(self) -> bool:
        """Start the worker's process and wait until it serves; False when the server began stopping first.

        Raises:
            WorkerError: the process failed to start: its own error, or how it ended.
        """
        sup = self.supervisor
        if sup.stopping.is_set():
            return False
        if self._channel is not None:
            self._channel.close()
        ours, theirs = socket.socketpair()
        with theirs:
            fds = (theirs.fileno(), sup.http_socket.fileno())
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", __name__, str(self.index), *map(str, fds),
                stdin=asyncio.subprocess.DEVNULL, pass_fds=fds,
            )
        if sup.stopping.is_set():  # a signal came while it was being started
            self.send(signal.SIGTERM)
        reader, self._channel = await asyncio.open_connection(sock=ours)
        spec = WorkerSpec(sup.artifacts, dataclasses.replace(sup.settings, worker_index=self.index),
                          *_logging_here())
        self._channel.write(pickle.dumps(spec))
        try:
            line = await reader.readline()
        except ConnectionError:  # it ended before reading all of the spec
            line = b""
        message = json.loads(line) if line else {}
        if "ready" in message:
            self.serving = True
            sup.serving()
            return True
        status = await self.process.wait()
        if sup.stopping.is_set():
            return False
        if "failed" in message:
            raise WorkerError(message["failed"])
        raise WorkerError(f"worker {self.index} (pid {self.process.pid}) {describe(status)} before it was serving")

    def send(self, sig: signal.Signals) -> bool:
        """Send ``sig`` to the worker's process if it is running; returns whether it was."""
        if self.process is None or self.process.returncode is not None:
            return False
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(sig)
        return True

    async def exited(self) -> None:
        """Wait until the worker's process, if any, has exited."""
        if self.process is not None:
            await self.process.wait()
        if self._channel is not None:
            self._channel.close()


def _logging_here() -> tuple[int, logging.Formatter | None, bool]:
    """This process's logging level, the formatter of its stderr handler, and whether engine logs are shown."""
    root = logging.getLogger()
    handler = next((h for h in root.handlers if type(h) is logging.StreamHandler), None)
    return root.level, None if handler is None else handler.formatter, ENGINE_LOGS.shown


def _bind(what: str, host: str, port: int, flag: str, reuse_port: bool = False) -> socket.socket:
    """A TCP socket bound to ``host``:``port``, not listening.

    Raises:
        ServerConfigError: it cannot be bound (``what``'s port is in use, or the address is not this machine's).
    """
    shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"  # as the single server's errors show it
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise ServerConfigError(f"cannot listen for {what} on {shown}: {e.strerror or e}; choose another {flag} "
                                "(or --host)") from e
    return sock


# -- in the worker process ----------------------------------------------------------------------------------


class _WorkerServer(Server):
    """One worker's server: tells the supervisor once it serves, and stops if the supervisor goes away."""

    def __init__(self, dataplane, settings: ServerSettings, channel: socket.socket):
        super().__init__(dataplane, settings)
        self._channel = channel

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            _tell(self._channel, ready=os.getpid())
            # The supervisor sends nothing after the spec: the channel turns readable only when it closes.
            asyncio.get_running_loop().add_reader(self._channel.fileno(), self._supervisor_gone)

    def _supervisor_gone(self) -> None:
        asyncio.get_running_loop().remove_reader(self._channel.fileno())
        log.warning("the supervisor is gone; stopping")
        self.should_exit = True


def _tell(channel: socket.socket, **message) -> None:
    with contextlib.suppress(OSError):  # the supervisor is gone: nobody to tell
        channel.sendall(json.dumps(message).encode() + b"\n")


def main(argv: list[str]) -> int:
    """A worker process, as the supervisor starts it: ``python -m popfuse.runtime.server.workers INDEX CHANNEL
    HTTP`` (CHANNEL and HTTP: inherited file descriptors). Returns the exit status."""
    channel, http = socket.socket(fileno=int(argv[1])), socket.socket(fileno=int(argv[2]))
    for sock in (channel, http):
        sock.set_inheritable(False)
    with channel.makefile("rb") as stream:
        try:
            spec: WorkerSpec = pickle.load(stream)
        except EOFError:  # the supervisor went away before it sent anything
            return 1
    spec.configure_logging()
    server = None
    try:
        dataplane = build(spec.artifacts, spec.settings)
        fit_open_files(spec.settings)
        server = _WorkerServer(dataplane, spec.settings, channel)
        server.run(sockets=[http])
    except KeyboardInterrupt:  # Ctrl-C reaches the whole process group; the supervisor stops the rest
        return 130
    except Exception as e:
        if server is not None and server.started:
            raise
        log.debug("failed to start", exc_info=True)
        error = str(e) if isinstance(e, PopfuseError) else f"internal error: {type(e).__name__}: {e}"
        _tell(channel, failed=error)
        return 1
    return 0


if __name__ == "__main__":
    # Run as a module, this file is __main__; the spec's classes are those of the module by its own name.
    from popfuse.runtime.server import workers

    sys.exit(workers.main(sys.argv[1:]))
