"""``run_check``: what works here, as ``paddle.utils.run_check()`` reports it.

For every target popfuse knows: whether its backend and device are present,
and if so the result of fusing, compiling and running a tiny two-model fusion.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from popfuse.fusion import IR_VERSION, compile_artifact, fuse_models
from popfuse.runtime import PopfuseError, Runner
from popfuse.runtime.artifact import encode_artifact
from popfuse.runtime.backends import resolve_target, targets


@dataclass(frozen=True)
class CheckResult:
    """One target: available here or not, and whether the tiny model ran right."""

    target: str
    available: bool
    ok: bool
    detail: str


def _tiny_models() -> list[onnx.ModelProto]:
    def model(op: str, constant: float) -> onnx.ModelProto:
        graph = helper.make_graph(
            [helper.make_node(op, ["X", "C"], ["Y"])],
            f"tiny_{op.lower()}",
            [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 2])],
            [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, 2])],
            initializer=[numpy_helper.from_array(np.full((1, 2), constant, np.float32), "C")],
        )
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=IR_VERSION)

    return [model("Add", 1.0), model("Mul", 3.0)]


def check_targets() -> list[CheckResult]:
    """Check every target: fuse two tiny models, compile them, run both subgraphs."""
    results = []
    x = np.array([[1.0, 2.0]], np.float32)
    for target in targets():
        backend, device = resolve_target(target)
        if device not in backend.devices():
            results.append(CheckResult(target, False, False, f"{backend.name} {backend.version()} has no {device} "
                                                             "device here"))
            continue
        try:
            artifact = compile_artifact(fuse_models(_tiny_models()), target)
            runner = Runner(b"".join(encode_artifact(artifact)))
            got = []
            for sub in runner.subgraphs:
                feeds = {runner.fusion_map.index_anchor: np.array([sub.index], np.uint32), sub.anchor("X"): x}
                got.append(runner.execute(feeds)[sub.anchor("Y")])
            ok = bool(np.allclose(got[0], x + 1) and np.allclose(got[1], x * 3))
            results.append(CheckResult(target, True, ok, "fused two models, compiled, ran both" if ok
                                       else f"wrong results: {got}"))
        except PopfuseError as e:
            results.append(CheckResult(target, True, False, str(e)))
    return results


def report(results: list[CheckResult]) -> str:
    """``check_targets``'s results as lines of text."""
    lines = [f"{r.target}: {'works' if r.ok else 'FAILED' if r.available else 'not available'} ({r.detail})"
             for r in results]
    working = [r.target for r in results if r.ok]
    lines.append(f"popfuse is installed successfully; usable targets: {', '.join(working)}" if working
                 else "popfuse could not run on any target here")
    return "\n".join(lines)


def run_check() -> list[CheckResult]:
    """``paddle.utils.run_check()``: check every target and print the report; returns the results."""
    results = check_targets()
    print(report(results))
    return results
