"""Triton's perf_analyzer against the server, over HTTP and gRPC, at concurrency 1 and 8, with binary data.

It runs when perf_analyzer is set up (``python -m popfuse.benchmarks.perf_analyzer``, which .ci/run does);
otherwise it skips and says how to set it up, unless POPFUSE_REQUIRE_PERF_ANALYZER=1 makes it fail.
"""

from __future__ import annotations

import os

import pytest

from popfuse.benchmarks import perf_analyzer
from tests.models import scale_model
from tests.runtime.server.conftest import RunningServer, named, server_settings


@pytest.fixture(scope="module")
def analyzer():
    found = perf_analyzer.find()
    if found is None:
        message = ("perf_analyzer is not set up; run `python -m popfuse.benchmarks.perf_analyzer` (it downloads the "
                   "tritonclient 2.41.0 wheel, nvidia-cuda-runtime-cu12 and Debian's libb64-0d into a cache folder)")
        if os.environ.get("POPFUSE_REQUIRE_PERF_ANALYZER"):
            pytest.fail(message)
        pytest.skip(message)
    return found


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_perf_analyzer_measures_the_server(analyzer, make_artifact, protocol):
    server = RunningServer([make_artifact([scale_model()], named("m"), name="m.popef")], server_settings(grpc=True))
    try:
        url = server.url if protocol == "http" else server.grpc_url
        results = analyzer.measure(url, protocol, "m", {"X": [1, 4]}, concurrency=(1, 8), window_ms=500, trials=8,
                                   timeout=120)
    finally:
        server.stop()
    assert [r.concurrency for r in results] == [1, 8]
    assert all(r.throughput > 0 and 0 < r.p50_us <= r.p99_us for r in results)
    stats = server.dataplane.statistics("m")["model_stats"][0]
    assert stats["inference_stats"]["fail"]["count"] == 0 and stats["inference_stats"]["success"]["count"] > 0
