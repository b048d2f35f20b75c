"""``python -m popfuse.benchmarks`` / ``popfuse bench``: run the suites and write the report."""

from __future__ import annotations

import argparse
import importlib
import tempfile
import time
from collections.abc import Sequence
from datetime import date
from pathlib import Path

from popfuse.arguments import Parser

# Each a module of ``suites`` with ``run(ctx) -> dict``, imported when it runs: the suites import
# onnxruntime and the compiler, which building the parser (``popfuse --help``) must not.
SUITES = ("dispatch", "switching", "coldstart", "scaling", "size", "serving", "precision", "robustness",
          "tenancy", "scaleout")


def make_parser() -> argparse.ArgumentParser:
    """The benchmark's argument parser (``popfuse bench`` takes the same flags)."""
    parser = Parser(prog="popfuse bench", description=__doc__)
    add_arguments(parser)
    return parser


def suites(text: str) -> list[str]:
    """An ``argparse`` type: comma-separated suite names, each one of ``SUITES``."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in SUITES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown suite(s) {', '.join(unknown) or repr(text)}; "
                                          f"choose from {', '.join(SUITES)}")
    from .suites.scaleout import SKIPPED, available

    if "scaleout" in names and not available():
        # Asked for by name, it must run; in a run of every suite it is skipped, and the report says so.
        raise argparse.ArgumentTypeError(f"the scaleout suite {SKIPPED}")
    return names


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the benchmark's flags to ``parser``."""
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: check that the suites run, not how fast")
    parser.add_argument("--output", type=Path, default=Path("popfuse-bench"),
                        help="the folder for benchmarks.md, its figures and results.json")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads for every session")
    parser.add_argument("--only", type=suites, default=list(SUITES), metavar="SUITE[,SUITE…]",
                        help=f"the suites to run: {', '.join(SUITES)}")


def run(args: argparse.Namespace) -> int:
    """Run the suites ``args`` names and write the report; returns the exit status."""
    from . import report
    from .context import Context

    names, output = args.only, args.output
    print(f"writing the report into {output}/", flush=True)
    command = f"popfuse bench --output {output}" + (" --smoke" if args.smoke else "") + (
        f" --threads {args.threads}" if args.threads != 1 else "") + (
        f" --only {','.join(names)}" if set(names) != set(SUITES) else "")
    results: dict = {"machine": report.machine(), "threads": args.threads, "smoke": args.smoke,
                     "measured": dict.fromkeys(names, f"{date.today().isoformat()} with `{command}`")}
    with tempfile.TemporaryDirectory(prefix="popfuse-bench-work-") as work:
        ctx = Context(Path(work), threads=args.threads, smoke=args.smoke)
        for name in names:
            start = time.perf_counter()
            print(f"[{name}] running…", flush=True)
            results[name] = importlib.import_module(f".suites.{name}", __package__).run(ctx)
            print(f"[{name}] done in {time.perf_counter() - start:.1f} s", flush=True)
    path = report.write(report.carry_over(results, output), output)
    for key, (ok, figure) in report.verdicts(results).items():
        print(f"{report.VERDICT[ok]:<7} {report.TARGETS[key]}: {figure}")
    print(f"wrote {path}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m popfuse.benchmarks``."""
    return run(make_parser().parse_args(argv))
