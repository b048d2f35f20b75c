"""The benchmark suite runs end to end at smoke sizes (it checks that it runs, not how fast)."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from popfuse.benchmarks.cli import SUITES
from popfuse.runtime.server.heap import find_jemalloc


def test_benchmark_smoke_run_writes_the_report(tmp_path):
    # As an installed copy runs it: the console script, from a folder that is not the checkout. Every suite but
    # scale-out, whose Ray cluster is the ray tests' business (below).
    popfuse = Path(sys.executable).with_name("popfuse")
    ran = subprocess.run(
        [str(popfuse), "bench", "--smoke", "--only", ",".join(s for s in SUITES if s != "scaleout")],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    # Without --output, into a folder of the working directory, which it names first.
    assert ran.stdout.startswith("writing the report into popfuse-bench/")
    tmp_path = tmp_path / "popfuse-bench"
    report = (tmp_path / "benchmarks.md").read_text()
    for section in ("## Targets", "Dispatch overhead", "Model switching", "Cold start and memory", "Scaling in N",
                    "Artifact size", "Serving", "### gRPC", "Server overhead at concurrency 1", "## 8. fp16",
                    "Robustness"):
        assert section in report
    results = json.loads((tmp_path / "benchmarks" / "results.json").read_text())
    assert {"dispatch", "switching", "coldstart", "scaling", "size", "serving", "precision", "robustness",
            "machine"} <= set(results)
    serving = results["serving"]
    assert serving["batching"]["on_failures"] == serving["batching"]["off_failures"] == 0
    assert all(r["fused_failures"] == r["baseline_failures"] == 0 for r in serving["rows"] + serving["grpc_rows"])
    assert all(r["runner_p50_ms"] > 0 for r in serving["overhead"])
    robustness = results["robustness"]
    assert robustness["malformed"]["server_errors"] == 0 and robustness["slowloris"]["served_failures"] == 0
    assert serving["compute_bound"]["per_item_ms"] > 0
    assert set(serving["call_cost"]) == {"http_us", "grpc_us", "bare_grpc_us"}
    assert all(r["met"] for r in results["precision"]["rows"])
    # The tenants' p50: every sampled model paired in every process, and onnxruntime against itself beside it.
    for row in results["tenancy"]["rows"]:
        assert set(row["p50_model_ratios"]) == {str(i) for i in {0, row["n"] - 1}}  # n = 1, 2
        assert row["p50_ratio"] > 0 and row["twin_ratio"] > 0 and len(row["twin_process_ratios"]) >= 1
        assert row["depth"] >= 0 and row["nested_ratio"] > 0 and len(row["nested_process_ratios"]) >= 1
    assert "twin ratio" in report and "p50 by model" in report and "If floor" in report
    # Paired again on jemalloc wherever one is found, as popfuse serve --memory-allocator jemalloc runs.
    jemalloc = find_jemalloc() is not None
    assert jemalloc or not os.environ.get("POPFUSE_REQUIRE_JEMALLOC")  # CI provides one: nothing may go unchecked
    for row in results["tenancy"]["rows"]:
        assert (row["jemalloc"] is not None) == jemalloc
        if jemalloc:
            assert set(row["jemalloc"]["p50_model_ratios"]) == set(row["p50_model_ratios"])
            assert row["jemalloc"]["p50_ratio"] > 0 and row["jemalloc"]["nested_ratio"] > 0
    assert ("p50 ratio, jemalloc" in report) == jemalloc
    for plot in ("dispatch", "switching", "coldstart", "scaling", "serving", "precision"):
        assert (tmp_path / "benchmarks" / f"{plot}.png").stat().st_size > 1000


def test_unknown_suite_is_a_usage_error(tmp_path, capsys):
    from popfuse.cli import main

    assert main(["bench", "--smoke", "--only", "dispatch,warp", "--output", str(tmp_path)]) == 2
    assert "unknown suite(s) warp" in capsys.readouterr().err


def test_the_scaleout_suite_asked_for_without_ray_is_a_usage_error(tmp_path):
    code = ("import sys; sys.modules['ray'] = None; from popfuse.cli import main; "
            "sys.exit(main(['bench', '--smoke', '--only', 'scaleout', '--output', 'out']))")
    ran = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert ran.returncode == 2
    assert "the scaleout suite needs the ray extra: pip install 'popfuse[ray]'" in ran.stderr


@pytest.mark.ray
def test_the_scaleout_suite_runs_on_a_local_ray_cluster(tmp_path):
    if os.environ.get("POPFUSE_REQUIRE_RAY"):  # CI installs the extra: a skip there would hide a failure
        importlib.import_module("ray")
    else:
        pytest.importorskip("ray", reason="needs the ray extra: pip install 'popfuse[ray]'")
    popfuse = Path(sys.executable).with_name("popfuse")
    ran = subprocess.run([str(popfuse), "bench", "--smoke", "--only", "scaleout", "--output", "out"],
                         capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert ran.returncode == 0, ran.stdout + ran.stderr[-3000:]
    results = json.loads((tmp_path / "out" / "benchmarks" / "results.json").read_text())["scaleout"]
    popfuse_row, baseline_row = results["rows"]
    assert popfuse_row["failures"] == baseline_row["failures"] == 0
    assert popfuse_row["loads_per_1000"] > 0 and baseline_row["loads_per_1000"] > 0  # each side's own metrics
    assert results["overhead"]["ray_p50_ms"] > 0 and results["overhead"]["serve_p50_ms"] > 0
    assert "## 11. Scale-out on Ray Serve" in (tmp_path / "out" / "benchmarks.md").read_text()
    assert (tmp_path / "out" / "benchmarks" / "scaleout.png").stat().st_size > 1000
