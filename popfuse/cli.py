"""The ``popfuse`` command: a thin layer over the Python API.

Subcommands: ``build`` (YAML → fused ONNX + artifact), ``dump`` (show an
artifact), ``run`` (execute one subgraph). Each is built from argument groups
so that shared flags read the same everywhere.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from popfuse.runtime.display import human_size
from popfuse.runtime.errors import PopfuseError

log = logging.getLogger("popfuse")


def _add_runtime_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("runtime")
    group.add_argument("--threads", type=int, default=None, help="intra-op threads (default: the backend's)")
    group.add_argument(
        "--no-check-package-hash",
        action="store_true",
        help="load an artifact compiled by another backend version anyway",
    )


def _runtime_config(args: argparse.Namespace):
    from popfuse.runtime import RuntimeConfig

    return RuntimeConfig(
        validate_io_params=False,
        intra_op_num_threads=args.threads,
        check_package_hash=not args.no_check_package_hash,
    )


def cmd_build(args: argparse.Namespace) -> int:
    from popfuse.fusion import build

    start = time.perf_counter()
    result = build(args.config, progress=print)
    print()
    print(f"{'index':<6}{'name':<20}{'precision':<10}{'inputs':<8}{'outputs':<8}source")
    for s in result.fusion_map.subgraphs:
        print(f"{s.index:<6}{s.name:<20}{s.precision:<10}{len(s.inputs):<8}{len(s.outputs):<8}{s.source}")
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
    inputs = _load_inputs(runner, args.index, args.input)
    outputs = runner.execute(inputs)
    np.set_printoptions(threshold=20, edgeitems=3)
    for name, value in outputs.items():
        print(f"{name}: {value.dtype} {list(value.shape)}")
        print(f"  {np.array2string(value, prefix='  ')}")
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
            raise ExecutionError(f"--input {spec!r} must look like NAME=path.npy")
        name, path = spec.split("=", 1)
        if index is not None and 0 <= index < len(runner.subgraphs):
            name = runner.subgraphs[index].anchor(name) or name  # the model's own name of an input
        try:
            inputs[name] = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise ExecutionError(f"--input {name}: cannot load {path!r} as a .npy array: {e}") from e
    return inputs


def _artifact(spec: str) -> Path | tuple[str, Path]:
    """``PATH``, or ``NAME=PATH`` to name the artifact (a file whose own name has a '=' is taken as a path)."""
    name, eq, path = spec.partition("=")
    if not eq or not name or "/" in name or Path(spec).exists():
        return Path(spec)
    return name, Path(path)


def cmd_serve(args: argparse.Namespace) -> int:
    from popfuse.runtime.server.access import Restriction
    from popfuse.runtime.server.serve import serve
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
    )
    serve(args.artifacts, settings)
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from popfuse.check import run_check

    return 0 if any(r.ok for r in run_check()) else 1


def cmd_bench(args: argparse.Namespace) -> int:
    from popfuse.benchmarks.cli import run

    return run(args)


def make_parser() -> argparse.ArgumentParser:
    """The ``popfuse`` argument parser."""
    parser = argparse.ArgumentParser(prog="popfuse", description="Multi-model fusion compiler and runtime.")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("build", help="fuse the models of a YAML config and compile the artifact")
    p.add_argument("config", type=Path, help="the YAML build file")
    p.set_defaults(func=cmd_build)

    p = sub.add_parser("dump", help="show an artifact's anchors, metadata and fusion map")
    p.add_argument("file", type=Path, help="an executable.popef")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_dump)

    p = sub.add_parser("run", help="run one subgraph of an artifact and print its outputs")
    p.add_argument("file", type=Path, help="an executable.popef")
    p.add_argument("--index", type=int, default=None, help="the subgraph to run (default: from the names)")
    p.add_argument(
        "--input",
        action="append",
        default=[],
        metavar="NAME=PATH.npy",
        help="an input tensor; NAME is the anchor name, or the model's own name with --index",
    )
    p.add_argument("--iterations", type=int, default=1, help="run N times and print latency")
    _add_runtime_args(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("check", help="report the backends found and run a tiny fused model on each")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("serve", help="serve artifacts over the KServe v2 / Triton HTTP and gRPC protocols")
    p.add_argument("artifacts", nargs="+", type=_artifact, metavar="[NAME=]PATH",
                   help="executable.popef files, each subgraph a model; NAME=PATH names the artifact "
                        "(default: the file's name without .popef)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on, HTTP and gRPC (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=8000, help="HTTP port (default: 8000)")
    p.add_argument("--grpc-port", type=int, default=8001, help="gRPC port (default: 8001)")
    p.add_argument("--no-grpc", action="store_true", help="serve HTTP only (default: HTTP and gRPC)")
    group = p.add_argument_group("batching")
    group.add_argument("--max-batch-size", type=int, default=0, help="rows per batched execution (0: off)")
    group.add_argument("--max-queue-delay-us", type=int, default=0, help="how long a batch waits to fill")
    group.add_argument("--model-config", type=Path, default=None,
                       help="YAML with per-model batching: models: {name: {max_batch_size, max_queue_delay_us}}")
    group = p.add_argument_group("load")
    group.add_argument("--max-pending", type=int, default=256, help="queued or running requests before 503")
    group.add_argument("--max-body-bytes", type=int, default=64 * 1024 * 1024, help="larger bodies get 413")
    group.add_argument("--workers", type=int, default=None, help="threads that run models (default: cores)")
    group.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads per execution")
    group.add_argument("--graceful-timeout", type=float, default=30.0,
                       help="seconds in-flight requests may take to finish after SIGTERM")
    group.add_argument("--header-timeout", type=float, default=10.0,
                       help="seconds a connection has to send a request's headers before it is closed (default: 10)")
    group.add_argument("--body-timeout", type=float, default=60.0,
                       help="seconds a request has to send its body before its connection is closed (default: 60)")
    group.add_argument("--max-connections", type=int, default=4096,
                       help="open HTTP connections before more are refused (default: 4096)")
    group = p.add_argument_group("access control (Triton's restricted APIs; default: every API open)")
    groups = "health, metadata, inference, shared-memory, model-config, model-repository, statistics, trace, logging"
    group.add_argument("--http-restricted-api", action="append", default=[], metavar="API[,API...]:KEY=VALUE",
                       help=f"HTTP requests to these API groups need the header KEY: VALUE; repeatable. Groups: "
                            f"{groups} (default: none restricted)")
    group.add_argument("--grpc-restricted-api", action="append", default=[], metavar="API[,API...]:KEY=VALUE",
                       help="gRPC calls to these API groups need the metadata KEY: VALUE; repeatable "
                            "(default: none restricted)")
    p.set_defaults(func=cmd_serve)

    from popfuse.benchmarks.cli import add_arguments

    p = sub.add_parser("bench", help="measure fusion against plain onnxruntime and write docs/benchmarks.md")
    add_arguments(p)
    p.set_defaults(func=cmd_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``popfuse`` console script; returns the exit status."""
    args = make_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except PopfuseError as e:
        print(f"popfuse {args.command}: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
