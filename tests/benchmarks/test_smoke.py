"""The benchmark suite runs end to end at smoke sizes (it checks that it runs, not how fast)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def test_benchmark_smoke_run_writes_the_report(tmp_path):
    # As an installed copy runs it: the console script, from a folder that is not the checkout.
    popfuse = Path(sys.executable).with_name("popfuse")
    ran = subprocess.run(
        [str(popfuse), "bench", "--smoke"],
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
    assert all(r["met"] for r in results["precision"]["rows"])
    for plot in ("dispatch", "switching", "coldstart", "scaling", "serving", "precision"):
        assert (tmp_path / "benchmarks" / f"{plot}.png").stat().st_size > 1000


def test_unknown_suite_is_a_usage_error(tmp_path, capsys):
    from popfuse.cli import main

    assert main(["bench", "--smoke", "--only", "dispatch,warp", "--output", str(tmp_path)]) == 2
    assert "unknown suite(s) warp" in capsys.readouterr().err
