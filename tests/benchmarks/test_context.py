"""What every suite is given: its scratch folder and executable caches."""

from __future__ import annotations

import os

from popfuse.benchmarks.context import Context


def test_a_suite_can_load_an_artifact_into_a_cache_of_its_own(tmp_path, monkeypatch):
    # A build of the same models writes the same bytes, and the cache names an entry by them: the cold start's
    # first start found the entry the dispatch suite's load had made, and measured 0.47x instead of ~1.5x.
    monkeypatch.setenv("POPFUSE_CACHE_DIR", os.environ.get("POPFUSE_CACHE_DIR", ""))  # restored after the test
    ctx = Context(tmp_path)
    shared = tmp_path / "executable-cache"
    shared.mkdir()
    (shared / "made-by-an-earlier-suite.ort").write_bytes(b"entry")
    with ctx.own_cache("coldstart0") as folder:
        assert os.environ["POPFUSE_CACHE_DIR"] == str(folder) and not list(folder.glob("*.ort"))
    assert os.environ["POPFUSE_CACHE_DIR"] == str(shared)
