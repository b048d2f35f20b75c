"""``python -m popfuse.benchmarks`` / ``popfuse bench``: run the suites and write the report."""

from __future__ import annotations

import argparse
import importlib
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

# Each a module of ``suites`` with ``run(ctx) -> dict``, imported when it runs: the suites import
# onnxruntime and the compiler, which building the parser (``popfuse --help``) must not.
SUITES = ("dispatch", "switching", "coldstart", "scaling", "size", "serving", "robustness")


def make_parser() -> argparse.ArgumentParser:
    """The benchmark's argument parser (``popfuse bench`` takes the same flags)."""
    parser = argparse.ArgumentParser(prog="popfuse bench", description=__doc__)
    add_arguments(parser)
    return parser


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the benchmark's flags to ``parser``."""
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: check that the suites run, not how fast")
    parser.add_argument(
        "--output", type=Path, default=None,
        help="folder for benchmarks.md and its figures (default: docs/, or a temporary folder with --smoke)",
    )
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads for every session (default 1)")
    parser.add_argument("--only", default=",".join(SUITES), help=f"comma-separated suites: {', '.join(SUITES)}")
    parser.add_argument(
        "--update", action="store_true",
        help="keep the other suites' results from the output folder's last report and re-run only --only's "
             "(default: the report holds this run's suites only)",
    )


def run(args: argparse.Namespace) -> int:
    """Run the suites ``args`` names and write the report; returns the exit status."""
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in SUITES]
    if unknown:
        print(f"popfuse bench: error: unknown suite(s) {', '.join(unknown)}; choose from {', '.join(SUITES)}",
              file=sys.stderr)
        return 2
    from . import report
    from .context import Context

    output = args.output or (Path(tempfile.mkdtemp(prefix="popfuse-bench-")) if args.smoke else Path("docs"))
    command = "popfuse bench" + (" --smoke" if args.smoke else "") + (
        f" --threads {args.threads}" if args.threads != 1 else "") + (
        f" --only {','.join(names)} --update" if args.update else "")
    kept = report.previous(output) if args.update else {}
    results: dict = {**kept, "machine": report.machine(), "threads": args.threads, "smoke": args.smoke,
                     "runs": {**kept.get("runs", {}), **{name: report.run_record(command) for name in names}}}
    with tempfile.TemporaryDirectory(prefix="popfuse-bench-work-") as work:
        ctx = Context(Path(work), threads=args.threads, smoke=args.smoke)
        for name in names:
            start = time.perf_counter()
            print(f"[{name}] running…", flush=True)
            results[name] = importlib.import_module(f".suites.{name}", __package__).run(ctx)
            print(f"[{name}] done in {time.perf_counter() - start:.1f} s", flush=True)
    path = report.write(results, output, command)
    for key, (ok, figure) in report.verdicts(results).items():
        print(f"{'met    ' if ok else 'MISSED '} {report.TARGETS[key]}: {figure}")
    print(f"wrote {path}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m popfuse.benchmarks``."""
    return run(make_parser().parse_args(argv))
