"""The ``popfuse`` command: a thin layer over the Python API, behaving like a well-kept Unix tool.

Subcommands: ``build`` (YAML → fused ONNX + artifact), ``dump`` (show an artifact), ``run`` (execute one
subgraph), ``check`` (which targets work here), ``serve`` (KServe v2 / Triton server), ``bench`` (the
benchmarks) and ``completion`` (a shell completion script). Shared flags come from the argument groups of
``popfuse.arguments``. Errors are one line on stderr: exit status 2 for usage, 1 for a failure, 130 when
interrupted; a closed pipe ends quietly; ``--debug`` adds the traceback.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import re
import sys
import time
import traceback
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from popfuse.runtime.display import human_size, table
from popfuse.runtime.errors import PopfuseError
from popfuse.runtime.server.heap import ALLOCATORS

from .arguments import (
    EXIT_BROKEN_PIPE,
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    Parser,
    add_output_args,
    add_runtime_args,
    add_trusted_key_arg,
    positive_int,
)

log = logging.getLogger("popfuse")


class UsageError(PopfuseError):
    """The command line asks for something that cannot be (found only once the arguments parsed)."""


def _runtime_config(args: argparse.Namespace):
    from popfuse.runtime import RuntimeConfig

    return RuntimeConfig(
        validate_io_params=False,
        intra_op_num_threads=args.threads,
        check_package_hash=not args.no_check_package_hash,
        trusted_keys=tuple(args.trusted_key),
    )


def cmd_build(args: argparse.Namespace) -> int:
    from popfuse.fusion import build

    start = time.perf_counter()
    with warnings.catch_warnings():
        # A model's warning (fp16 past its tolerance) reads as the build's, beside its progress line.
        warnings.showwarning = lambda message, *_: print(f"popfuse build: warning: {message}", file=sys.stderr)
        result = build(args.config, progress=lambda line: print(line, flush=True), sign_key=args.sign_key)
    print()
    rows = [(s.index, s.name, s.precision, len(s.inputs), len(s.outputs), s.source)
            for s in result.fusion_map.subgraphs]
    print("\n".join(table(("index", "name", "precision", "inputs", "outputs", "source"), rows, indent="")))
    print()
    print(f"subgraphs: {len(result.fusion_map.subgraphs)}, shared weights: {result.fusion_map.shared_weights}")
    print(f"sources: {human_size(result.source_bytes)}")
    print(f"fused model: {result.fused_model_path} ({human_size(result.fused_model_bytes)})")
    if result.popef_path is not None:
        print(f"artifact: {result.popef_path} ({human_size(result.artifact_bytes)})")
    print(f"total time: {time.perf_counter() - start:.2f} s")
    return 0


def cmd_dump(args: argparse.Namespace) -> int:
    from popfuse.runtime.dump import describe, render

    info = describe(args.file)
    print(json.dumps(info, indent=2) if args.json else render(info))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from popfuse.runtime import Runner

    runner = Runner(args.file, _runtime_config(args))
    if args.index is not None and not 0 <= args.index < len(runner.subgraphs):
        models = ", ".join(f"{s.index} {s.name}" for s in runner.subgraphs)
        raise UsageError(
            f"--index {args.index} is out of range: {args.file} has {len(runner.subgraphs)} models, "
            f"0..{len(runner.subgraphs) - 1} ({models})"
        )
    inputs = _load_inputs(runner, args.index, args.input)
    outputs = runner.execute(inputs)
    np.set_printoptions(threshold=20, edgeitems=3)
    for name, value in outputs.items():
        print(f"{name}: {value.dtype} {list(value.shape)}")
        print(f"  {np.array2string(value, prefix='  ')}")
    if args.output is not None:
        for path in _save_outputs(runner, outputs, args.output):
            print(f"wrote {path}")
    if args.iterations > 1:
        times = []
        for _ in range(args.iterations):
            t = time.perf_counter()
            runner.execute(inputs)
            times.append(time.perf_counter() - t)
        ms = np.array(times) * 1e3
        print(
            f"{args.iterations} iterations: mean {ms.mean():.3f} ms, p50 {np.percentile(ms, 50):.3f} ms, "
            f"p99 {np.percentile(ms, 99):.3f} ms"
        )
    return 0


def _load_inputs(runner, index: int | None, specs: Sequence[str]) -> dict[str, np.ndarray]:
    from popfuse.runtime.errors import ExecutionError

    inputs: dict[str, np.ndarray] = {}
    if index is not None:
        inputs[runner.fusion_map.index_anchor] = np.array([index], np.uint32)
    for spec in specs:
        if "=" not in spec:
            raise UsageError(f"--input {spec!r} must look like NAME=PATH.npy")
        name, path = spec.split("=", 1)
        if index is not None:
            name = runner.subgraphs[index].anchor(name) or name  # the model's own name of an input
        try:
            inputs[name] = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise ExecutionError(f"--input {name}: cannot load {path!r} as a .npy array: {e}") from e
    return inputs


def _save_outputs(runner, outputs: dict[str, np.ndarray], target: Path) -> list[Path]:
    """Write the outputs under the model's own names: one ``.npz`` when ``target`` ends so, else one ``.npy``
    per output in the folder ``target`` (characters a file name cannot hold become ``_``). Returns the files
    written, each written atomically."""
    from popfuse.runtime.atomic import write_atomic

    sub = runner.subgraphs[runner.fusion_map.anchors()[next(iter(outputs))]]
    named = {sub.local_name(anchor): value for anchor, value in outputs.items()}
    if target.suffix == ".npz":
        buffer = io.BytesIO()
        np.savez(buffer, **named)
        write_atomic(target, buffer.getvalue())
        return [target]
    written = []
    for name, value in named.items():
        buffer = io.BytesIO()
        np.save(buffer, value, allow_pickle=False)
        written.append(target / (re.sub(r"[^A-Za-z0-9._-]", "_", name) + ".npy"))
        write_atomic(written[-1], buffer.getvalue())
    return written


def _artifact(spec: str) -> Path | tuple[str, Path]:
    """``PATH``, or ``NAME=PATH`` to name the artifact (a file whose own name has a '=' is taken as a path)."""
    name, eq, path = spec.partition("=")
    if not eq or not name or "/" in name or Path(spec).exists():
        return Path(spec)
    return name, Path(path)


def cmd_serve(args: argparse.Namespace) -> int:
    if args.ray is not None:
        return _serve_ray(args)
    if not args.artifacts:
        raise UsageError("name the artifacts to serve, or a catalog with --ray CATALOG.yaml")
    from popfuse.runtime.server.heap import use_allocator

    use_allocator(args.memory_allocator, args.argv)  # first: with jemalloc, the command starts again
    try:
        from popfuse.runtime.server.access import Restriction
        from popfuse.runtime.server.serve import serve
    except ModuleNotFoundError as e:
        raise UsageError(f"popfuse serve needs the serve extra, which is not installed here (no module "
                         f"{e.name!r}): pip install 'popfuse[serve]'") from e
    from popfuse.runtime.server.settings import BatchingConfig, ServerSettings, load_model_config

    settings = ServerSettings(
        host=args.host,
        port=args.port,
        grpc_port=None if args.no_grpc else args.grpc_port,
        max_body_bytes=args.max_body_bytes,
        max_pending=args.max_pending,
        workers=args.workers or ServerSettings().workers,
        intra_op_num_threads=args.threads,
        graceful_timeout_s=args.graceful_timeout,
        default_batching=BatchingConfig(args.max_batch_size, args.max_queue_delay_us),
        batching=load_model_config(args.model_config) if args.model_config else {},
        http_restricted=tuple(Restriction.parse(spec) for spec in args.http_restricted_api),
        grpc_restricted=tuple(Restriction.parse(spec) for spec in args.grpc_restricted_api),
        header_timeout_s=args.header_timeout,
        body_timeout_s=args.body_timeout,
        max_connections=args.max_connections,
        worker_processes=args.worker_processes,
        trusted_keys=tuple(args.trusted_key),
    )
    serve(args.artifacts, settings)
    return 0


#: ``popfuse serve`` flags that a Ray catalog sets instead, and where (None: none applies; Ray Serve's proxies
#: hold the connections).
_CATALOG_SETS = {"max_batch_size": None, "max_queue_delay_us": None, "model_config": None,
                 "max_pending": "ingress.max_pending", "max_body_bytes": "ingress.max_body_bytes",
                 "workers": "replicas.workers", "threads": "replicas.threads", "graceful_timeout": None,
                 "header_timeout": None, "body_timeout": None, "max_connections": None,
                 "http_restricted_api": "ingress.http_restricted_api",
                 "grpc_restricted_api": "ingress.grpc_restricted_api",
                 "worker_processes": "replicas.num_replicas", "trusted_key": "replicas.trusted_keys",
                 "memory_allocator": None}


def _serve_ray(args: argparse.Namespace) -> int:
    if args.artifacts:
        raise UsageError("with --ray, the catalog names the artifacts; drop the artifact arguments")
    defaults = make_parser().parse_args(["serve", "--ray", str(args.ray)])
    for name, key in _CATALOG_SETS.items():
        if getattr(args, name) != getattr(defaults, name):
            flag = "--" + name.replace("_", "-")
            raise UsageError(f"{flag} does not apply with --ray" + (f"; set {key} in the catalog" if key else ""))
    from popfuse.runtime.scaleout.catalog import load_catalog

    catalog = load_catalog(args.ray)  # refused before anything starts, Ray or not
    try:
        from popfuse.runtime.scaleout.app import serve_catalog
    except ModuleNotFoundError as e:
        raise UsageError(f"popfuse serve --ray needs the ray extra, which is not installed here (no module "
                         f"{e.name!r}): pip install 'popfuse[ray]'") from e
    serve_catalog(catalog, args.host, args.port, None if args.no_grpc else args.grpc_port)
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from popfuse.check import run_check

    return 0 if any(r.ok for r in run_check()) else 1


def cmd_bench(args: argparse.Namespace) -> int:
    from popfuse.benchmarks.cli import run

    return run(args)


def cmd_completion(args: argparse.Namespace) -> int:
    import shtab

    print(shtab.complete(make_parser(), shell=args.shell), end="")
    return 0


def make_parser() -> argparse.ArgumentParser:
    """The ``popfuse`` argument parser."""
    parser = Parser(prog="popfuse", description="Multi-model fusion compiler, runtime and server.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str, func) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help[0].upper() + help[1:] + ".")
        p.set_defaults(func=func)
        add_output_args(p)
        return p

    p = command("build", "fuse the models of a YAML config and compile the artifact", cmd_build)
    p.add_argument("config", type=Path, help="the YAML build file (PopRT's schema, see docs/fusion.md)")
    p.add_argument("--sign-key", type=Path, default=None, metavar="KEY",
                   help="sign the artifact with this Ed25519 private key (PEM or OpenSSH; needs popfuse[sign]) "
                        "(default: unsigned)")

    p = command("dump", "show an artifact's blobs, metadata, anchors and fusion map", cmd_dump)
    p.add_argument("file", type=Path, help="an artifact, such as executable.popef")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")

    p = command("run", "run one subgraph of an artifact and print its outputs", cmd_run)
    p.add_argument("file", type=Path, help="an artifact, such as executable.popef")
    p.add_argument("--index", type=int, default=None,
                   help="the subgraph to run (default: the one whose inputs are given)")
    p.add_argument("--input", action="append", default=[], metavar="NAME=PATH.npy",
                   help="an input tensor, repeated for each input; NAME is the anchor (graph0/X), or the "
                        "model's own name (X) with --index")
    p.add_argument("--output", type=Path, default=None, metavar="DIR|FILE.npz",
                   help="also write the outputs, under the model's own names: one .npy each in folder DIR, or "
                        "all in FILE.npz")
    p.add_argument("--iterations", type=positive_int, default=1, help="run N times and print the latency")
    add_runtime_args(p)

    command("check", "say which targets work here, running a tiny fused model on each", cmd_check)

    p = command("serve", "serve artifacts over the KServe v2 / Triton HTTP and gRPC protocols", cmd_serve)
    p.add_argument("artifacts", nargs="*", type=_artifact, metavar="[NAME=]PATH",
                   help="artifacts to serve, each subgraph a model; NAME=PATH names the artifact, else it is "
                        "named after its file (executable.popef: executable)")
    p.add_argument("--ray", type=Path, default=None, metavar="CATALOG.yaml",
                   help="serve a catalog's artifacts on a Ray Serve cluster instead (RAY_ADDRESS's, `ray start`'s, "
                        "or one started here); see docs/scale-out.md")
    p.add_argument("--host", default="127.0.0.1",
                   help="the address to listen on, HTTP and gRPC (127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="the HTTP port")
    p.add_argument("--grpc-port", type=int, default=8001, help="the gRPC port")
    p.add_argument("--no-grpc", action="store_true", help="serve HTTP only")
    group = p.add_argument_group("batching")
    group.add_argument("--max-batch-size", type=int, default=0, help="rows per batched execution (0: off)")
    group.add_argument("--max-queue-delay-us", type=int, default=0,
                       help="how long a batch waits to fill, in microseconds")
    group.add_argument("--model-config", type=Path, default=None,
                       help="YAML with per-model batching: models: {name: {max_batch_size, max_queue_delay_us}}")
    group = p.add_argument_group("load")
    group.add_argument("--max-pending", type=int, default=256,
                       help="queued or running requests before 503, in each process")
    group.add_argument("--max-body-bytes", type=int, default=64 * 1024 * 1024, help="larger bodies get 413")
    group.add_argument("--worker-processes", type=positive_int, default=1, metavar="K",
                       help="processes that serve the artifacts behind the same HTTP and gRPC ports, sharing the "
                            "artifacts' and executables' memory; each has its own --workers threads, and loading "
                            "or unloading over the API is off when K > 1")
    group.add_argument("--workers", type=int, default=None,
                       help="threads that run models, in each process (default: the number of cores)")
    group.add_argument("--memory-allocator", choices=ALLOCATORS, default="system",
                       help="the C allocator every process runs on: the system's, or jemalloc preloaded (from "
                            "$POPFUSE_JEMALLOC, the system, or the ray extra), which keeps a large fusion's p50 "
                            "nearer its models' own; see docs/server.md")
    group.add_argument("--threads", type=int, default=None,
                       help="onnxruntime intra-op threads per execution (default: onnxruntime's choice)")
    add_trusted_key_arg(group)
    group.add_argument("--graceful-timeout", type=float, default=30.0,
                       help="seconds in-flight requests may take to finish after SIGTERM")
    group.add_argument("--header-timeout", type=float, default=10.0,
                       help="seconds a connection has to send a request's headers before it is closed")
    group.add_argument("--body-timeout", type=float, default=60.0,
                       help="seconds a request has to send its body before its connection is closed (and a gRPC "
                            "connection may stay with no call in flight)")
    group.add_argument("--max-connections", type=int, default=4096,
                       help="open connections before more are refused, HTTP and gRPC each, in each process")
    group = p.add_argument_group("access control (Triton's restricted APIs; default: every API open)")
    groups = "health, metadata, inference, shared-memory, model-config, model-repository, statistics, trace, logging"
    group.add_argument("--http-restricted-api", action="append", default=[], metavar="API[,API...]:KEY=VALUE",
                       help=f"HTTP requests to these API groups need the header KEY: VALUE; repeatable. Groups: "
                            f"{groups} (default: none restricted)")
    group.add_argument("--grpc-restricted-api", action="append", default=[], metavar="API[,API...]:KEY=VALUE",
                       help="gRPC calls to these API groups need the metadata KEY: VALUE; repeatable "
                            "(default: none restricted)")

    from popfuse.benchmarks.cli import add_arguments

    p = command("bench", "measure fusion against plain onnxruntime and write a report", cmd_bench)
    add_arguments(p)

    p = command("completion", "print a shell completion script for popfuse", cmd_completion)
    p.add_argument("shell", choices=("bash", "zsh", "tcsh"),
                   help="the shell; e.g. `popfuse completion bash > ~/.local/share/bash-completion/completions/"
                        "popfuse`")
    return parser


def _version() -> str:
    from popfuse import __version__

    return __version__


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``popfuse`` console script; returns the exit status.

    Errors are one line on stderr (``popfuse COMMAND: error: …``): 2 for usage, 1 for a failure, 130 when
    interrupted; ``--debug`` prints the traceback as well. A closed pipe (``popfuse dump … | head``) ends
    quietly.
    """
    try:
        args = make_parser().parse_args(argv)
    except SystemExit as e:  # --help, --version, and usage errors (already printed on one line)
        return e.code if isinstance(e.code, int) else EXIT_USAGE
    args.argv = list(sys.argv[1:] if argv is None else argv)  # what to run again in a process started afresh
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s" if args.verbose else "popfuse: %(message)s")
    if args.verbose:
        from popfuse.runtime.backends import show_engine_logs

        show_engine_logs(True)
    where = f"popfuse {args.command}"
    try:
        return args.func(args)
    except UsageError as e:
        return _fail(where, str(e), args, EXIT_USAGE)
    except PopfuseError as e:
        return _fail(where, str(e), args, EXIT_FAILURE)
    except KeyboardInterrupt:
        return _fail(where, "interrupted", args, EXIT_INTERRUPTED)
    except BrokenPipeError:
        # The reader went away (`| head`): stop quietly, and keep the interpreter from failing to flush stdout.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except Exception as e:  # a bug of popfuse's own: still one line, the traceback with --debug
        return _fail(where, f"internal error: {type(e).__name__}: {e}", args, EXIT_FAILURE, internal=True)


def _fail(where: str, message: str, args: argparse.Namespace, status: int, internal: bool = False) -> int:
    if args.debug:
        traceback.print_exc()
    if status == EXIT_INTERRUPTED:
        print(f"{where}: interrupted", file=sys.stderr)
        return status
    text = " ".join(line.strip() for line in message.splitlines() if line.strip())  # one line, whatever it says
    hint = " (run with --debug for the traceback)" if internal and not args.debug else ""
    print(f"{where}: error: {text}{hint}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
