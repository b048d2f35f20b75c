"""The pass contract, and the pipeline that runs passes in order.

A pass is a function ``ModelProto -> PassResult``: it copies its input and
never edits it, so a pass that fails leaves nothing half-edited. The same
pipeline runs each model's passes and the compile stage; a failure names the
pass, what it ran on and the passes that ran before it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import onnx
from google.protobuf.message import DecodeError, EncodeError

from popfuse.runtime.errors import PopfuseError

from .errors import FusionError

D = TypeVar("D")


@dataclass(frozen=True)
class PassResult(Generic[D]):
    """What every pass returns.

    Attributes:
        model: The pass's output; its input when nothing changed.
        modified: Whether the pass changed anything.
        details: What the pass found, in its own type (the payload it moved out, a count …); None if nothing.
    """

    model: onnx.ModelProto
    modified: bool
    details: D | None = None


@dataclass(frozen=True)
class Pass:
    """A named step of a pipeline."""

    name: str
    run: Callable[[onnx.ModelProto], PassResult[Any]]


class PassError(FusionError):
    """A pass failed: names the pass, what it ran on, and the passes before it."""

    def __init__(self, pass_name: str, subject: str, before: Sequence[str], problem: str):
        self.pass_name, self.subject, self.before = pass_name, subject, tuple(before)
        after = f" (after {', '.join(before)})" if before else ""
        super().__init__(f"{subject}: pass {pass_name!r}{after}: {problem}")


# What a pass may raise from inside onnx, onnx-graphsurgeon or a converter, besides popfuse's own errors.
_FOREIGN = (
    onnx.checker.ValidationError,
    onnx.shape_inference.InferenceError,
    DecodeError,
    EncodeError,
    ValueError,
    RuntimeError,
    TypeError,
    KeyError,
    IndexError,
)


#: Told of each pass as it ends: its name, its seconds and its result.
PassDone = Callable[[str, float, PassResult[Any]], None]


def run_passes(
    passes: Sequence[Pass], model: onnx.ModelProto, subject: str, done: PassDone | None = None
) -> dict[str, PassResult[Any]]:
    """Run ``passes`` in order, each on the previous one's model.

    Args:
        passes: The steps, in order.
        model: The first pass's input.
        subject: What the passes run on, for errors: ``model 'det'``, ``the fused graph``.
        done: Called after each pass, for progress.

    Returns:
        Each pass's result by name, in order; the last one holds the final model.

    Raises:
        PassError: naming the pass that failed, chained to its cause.
    """
    results: dict[str, PassResult[Any]] = {}
    for step in passes:
        start = time.perf_counter()
        try:
            result = step.run(model)
        except PassError:
            raise
        except (PopfuseError, *_FOREIGN) as e:
            raise PassError(step.name, subject, list(results), str(e)) from e
        results[step.name] = result
        model = result.model
        if done is not None:
            done(step.name, time.perf_counter() - start, result)
    return results


def final_model(results: dict[str, PassResult[Any]]) -> onnx.ModelProto:
    """The model the last pass of ``run_passes`` returned."""
    return next(reversed(results.values())).model
