"""The report: a suite run alone keeps the figures of an earlier, alike run beside its own, each dated; the tenants' p50
verdict says which allocator it judges."""

from __future__ import annotations

import json

from popfuse.benchmarks import report

SIZE = {"rows": [{"case": "c", "sources_bytes": 10, "deduplicated_bytes": 0, "artifact_bytes": 9, "content_bytes": 8,
                  "records_bytes": 1, "budget_bytes": 10, "artifact_over_budget": 0.9}]}
SCALING = {"rows": [{"n": n, "build_s": 0.1, "load_s": 0.1, "artifact_bytes": 1, "sources_bytes": 1,
                     "direct_p50_us": 10.0, "fused_p50_us": 12.0 + n, "overhead_us": 2.0 + n} for n in (2, 4, 8)]}


def run(suites: dict, stamp: str, threads: int = 1, smoke: bool = False) -> dict:
    return {"machine": report.machine(), "threads": threads, "smoke": smoke,
            "measured": dict.fromkeys(suites, stamp), **suites}


def test_a_suite_run_alone_keeps_the_earlier_runs_other_figures(tmp_path):
    report.write(run({"size": SIZE}, "2026-11-30 with `popfuse bench`"), tmp_path)
    merged = report.carry_over(run({"scaling": SCALING}, "2026-12-01 with `popfuse bench --only scaling`"), tmp_path)
    assert merged["size"] == SIZE and merged["measured"]["size"] == "2026-11-30 with `popfuse bench`"
    text = report.write(merged, tmp_path).read_text()
    assert text.count("Measured on machines alike, ") == 1
    assert "2026-11-30 with `popfuse bench` (size)" in text
    assert "2026-12-01 with `popfuse bench --only scaling` (scaling)" in text
    assert "## 5. Scaling in N" in text and "## 6. Artifact size" in text
    assert set(json.loads((tmp_path / "benchmarks" / "results.json").read_text())) >= {"size", "scaling"}


def test_figures_of_an_unlike_run_are_not_carried(tmp_path):
    new = run({"scaling": SCALING}, "today")
    for earlier in (run({"size": SIZE}, "then", threads=2), run({"size": SIZE}, "then", smoke=True)):
        report.write(earlier, tmp_path)
        assert "size" not in report.carry_over(new, tmp_path)
    # Another vector width lays weights out otherwise, and a run that did not record its width may have had
    # another: not alike.
    other = run({"size": SIZE}, "then")
    other["machine"]["vector"] = "AVX-512" if new["machine"]["vector"] != "AVX-512" else "AVX2"
    report.write(other, tmp_path)
    assert "size" not in report.carry_over(new, tmp_path)
    del other["machine"]["vector"]
    report.write(other, tmp_path)
    assert "size" not in report.carry_over(new, tmp_path)
    (tmp_path / "benchmarks" / "results.json").write_text("{not json")
    assert report.carry_over(new, tmp_path) == new
    assert report.carry_over(new, tmp_path / "nothing") == new


def _p50s(ratio: float, n: int) -> dict:
    return {"p50_ratio": ratio, "p50_model_ratios": {"0": ratio, str(n - 1): ratio}, "twin_ratio": 1.0,
            "nested_ratio": ratio}


def _tenancy(p50: float, jemalloc_p50: float | None) -> dict:
    """Tenancy results of two rows whose p50 is ``p50`` on glibc and ``jemalloc_p50`` on jemalloc (None: not
    measured)."""
    rows = [{"model": "cls", "n": n, "rss_ratio": 0.5, "time_ratio": 0.2, "size_ratio": 0.9,
             "load_per_model_ms": 20.0, "build_per_model_s": 0.2, **_p50s(p50, n),
             "jemalloc": None if jemalloc_p50 is None else _p50s(jemalloc_p50, n)} for n in (8, 32)]
    return {"rows": rows, "workers": {"extra_ratio": 0.4, "fused_extra_private_mb": 4.0,
                                      "sessions_extra_private_mb": 10.0}}


def test_the_tenants_p50_is_judged_on_jemalloc_where_measured_and_says_the_default_allocators_too():
    met, text = report.verdicts({"tenancy": _tenancy(1.04, 1.02)})["tenancy_p50"]
    assert met is True
    assert text.startswith("on jemalloc (popfuse serve --memory-allocator jemalloc, not the default")
    assert "cls N=32: 1.020x" in text
    assert "On the system allocator (glibc, the default), not met: cls N=8: 1.040x" in text
    met, text = report.verdicts({"tenancy": _tenancy(1.04, 1.035)})["tenancy_p50"]
    assert met is False
    # Where no jemalloc was found, the system allocator's figures alone, judged as they are.
    met, text = report.verdicts({"tenancy": _tenancy(1.02, None)})["tenancy_p50"]
    assert met is True and "jemalloc" not in text and text.startswith("cls N=8: 1.020x")
