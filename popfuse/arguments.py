"""The command line's shared pieces: a parser whose errors are one line, help that shows every default,
and the argument groups several subcommands share (Polygraphy's way of building a CLI)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import NoReturn

#: Exit statuses, as Unix tools use them.
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Shows each option's default after its help, where the default says something."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if "%(default)" in text or default in (None, False, [], argparse.SUPPRESS) or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"


class Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line on stderr, with exit status 2."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: error: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def add_output_args(parser: argparse.ArgumentParser) -> None:
    """How much the command says: logging, the engine's own log lines, tracebacks."""
    group = parser.add_argument_group("output")
    group.add_argument("-v", "--verbose", action="store_true",
                       help="say more, and show the backend engine's own log lines")
    group.add_argument("--debug", action="store_true", help="on an error, print the full traceback too")


def add_runtime_args(parser: argparse.ArgumentParser) -> None:
    """How an artifact is opened."""
    group = parser.add_argument_group("runtime")
    group.add_argument("--threads", type=int, default=None,
                       help="intra-op threads of the backend (default: the backend's own choice)")
    group.add_argument("--no-check-package-hash", action="store_true",
                       help="load an artifact compiled by another backend version anyway")
    add_trusted_key_arg(group)


def add_trusted_key_arg(group: argparse._ArgumentGroup) -> None:
    """``--trusted-key``: open only artifacts signed by one of these keys."""
    group.add_argument("--trusted-key", action="append", type=Path, default=[], metavar="KEY.pub",
                       help="open only artifacts signed by this Ed25519 public key (PEM or OpenSSH); repeat for "
                            "several (default: any artifact, signed or not)")


def positive_int(text: str) -> int:
    """An ``argparse`` type: an integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, received {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected at least 1, received {value}")
    return value
