"""popfuse check / run_check: which targets work here, as paddle.utils.run_check() reports it."""

from __future__ import annotations

from popfuse.check import run_check
from popfuse.cli import main


def test_run_check_prints_the_report_and_returns_each_target(capsys):
    results = {r.target: r for r in run_check()}
    assert results["onnxruntime-cpu"].ok and results["onnxruntime-cpu"].available
    assert not results["onnxruntime-cuda"].ok  # this onnxruntime has no CUDA provider
    out = capsys.readouterr().out
    assert "onnxruntime-cpu: works (fused two models, compiled, ran both)" in out
    assert "usable targets: onnxruntime-cpu" in out


def test_popfuse_check_exits_0_when_a_target_works(capsys):
    assert main(["check"]) == 0
    assert "onnxruntime-cpu: works" in capsys.readouterr().out
