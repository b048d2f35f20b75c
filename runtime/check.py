"""``run_check``: what works here, as ``paddle.utils.run_check()`` reports it.

For every target popfuse knows: whether its backend and device are present,
and if so the result of fusing, compiling and running a tiny two-model fusion.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class CheckResult:
    """One target: available here or not, and whether the tiny model ran right."""

    target: str
    available: bool
    ok: bool
    detail: str


def _tiny_models():
    from onnx import TensorProto, helper, numpy_helper

    def model(op: str, constant: float):
        graph = helper.make_graph(
            [helper.make_node(op, ["X", "C"], ["Y"])],
            f"tiny_{op.lower()}",
            [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 2])],
            [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, 2])],
            initializer=[numpy_helper.from_array(np.full((1, 2), constant, np.float32), "C")],
        )
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)

    return [model("Add", 1.0), model("Mul", 3.0)]


def run_check() -> list[CheckResult]:
    """Check every target; see ``report`` for a printable summary."""
    from fusion import compile_artifact, fuse
    from runtime.artifact import to_blobs
    from runtime.popef import iter_encoded

    from .backends import resolve_target, targets
    from .errors import PopfuseError
    from .runner import Runner

    results = []
    for target in targets():
        backend, device = resolve_target(target)
        if device not in backend.devices():
            results.append(CheckResult(target, False, False, f"{backend.name} {backend.version()} has no {device} device here"))
            continue
        try:
            artifact = compile_artifact(fuse(_tiny_models()), target)
            runner = Runner(b"".join(iter_encoded(to_blobs(artifact))))
            x = np.array([[1.0, 2.0]], np.float32)
            got = [runner.execute({"index": np.array([i], np.uint32), f"graph{i}/X": x})[f"graph{i}/Y"] for i in (0, 1)]
            ok = np.allclose(got[0], x + 1) and np.allclose(got[1], x * 3)
            results.append(CheckResult(target, True, bool(ok), "fused two models, compiled, ran both" if ok
                                       else f"wrong results: {got}"))
        except PopfuseError as e:
            results.append(CheckResult(target, True, False, str(e)))
    return results


def report(results: list[CheckResult]) -> str:
    """``run_check``'s results as lines of text."""
    import onnxruntime

    lines = [f"onnxruntime {onnxruntime.__version__}, providers: {', '.join(onnxruntime.get_available_providers())}"]
    for r in results:
        state = "works" if r.ok else ("FAILED" if r.available else "not available")
        lines.append(f"{r.target}: {state} ({r.detail})")
    working = [r.target for r in results if r.ok]
    lines.append(f"popfuse is installed successfully; usable targets: {', '.join(working)}" if working
                 else "popfuse could not run on any target here")
    return "\n".join(lines)
