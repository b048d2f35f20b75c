"""The artifact reader under fuzzing, bounded to a few seconds: raw and forged mutants of a real artifact give
popfuse's own errors or the right outputs, never another exception; no forged mutant of a signed one loads.

The long run is ``python -m popfuse.benchmarks.fuzz`` (figures in docs/runtime.md).
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from popfuse.benchmarks import fuzz

FAST = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def targets(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz")
    unsigned, signed = fuzz.small_targets(folder)
    return {t.name: (t, fuzz.reference_outputs(t, folder)) for t in (unsigned, signed)}, folder


def open_ok(targets, name: str, data: bytes) -> fuzz.Outcome:
    (target, reference), folder = targets[0][name], targets[1]
    outcome = fuzz.open_mutant(data, target, reference, folder)
    assert outcome.kind != fuzz.UNTYPED, outcome.detail
    return outcome


@FAST
@given(at=st.integers(min_value=0), data=st.binary(min_size=1, max_size=64), kind=st.sampled_from(
    ["overwrite", "insert", "cut", "append"]))
def test_raw_mutants_are_refused_with_a_typed_error(targets, at, data, kind):
    intact = targets[0]["small"][0].data
    at %= len(intact)
    mutant = {"overwrite": intact[:at] + data + intact[at + len(data):], "insert": intact[:at] + data + intact[at:],
              "cut": intact[:at], "append": intact + data}[kind]
    if mutant != intact:
        assert open_ok(targets, "small", mutant).kind == fuzz.TYPED


@FAST
@given(index=st.integers(min_value=0, max_value=10**9))
def test_forged_mutants_give_typed_errors_or_load(targets, index):
    data, _ = fuzz.mutant(targets[0]["small"][0], index, 0, forged=True)
    assert open_ok(targets, "small", data).kind in (fuzz.TYPED, fuzz.CORRECT, fuzz.WRONG)


@FAST
@given(index=st.integers(min_value=0, max_value=10**9))
def test_no_forged_mutant_of_a_signed_artifact_loads(targets, index):
    data, what = fuzz.mutant(targets[0]["small-signed"][0], index, 0, forged=True)
    assert open_ok(targets, "small-signed", data).kind == fuzz.TYPED, what


def test_the_long_run_counts_every_mutant_in_worker_processes(targets):
    report = fuzz.run([targets[0]["small"][0]], [1.0], mutants=12, workers=1, timeout_s=120)
    assert sum(report.counts["small raw"].values()) == 6 and sum(report.counts["small forged"].values()) == 6
    assert report.counts["small raw"][fuzz.TYPED] == 6 and not report.untyped
