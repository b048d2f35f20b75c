"""Where an artifact lives: local paths used in place, URIs read through smart_open (HTTP on loopback here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from popfuse.runtime.artifact import read_header
from popfuse.runtime.errors import ArtifactError
from popfuse.runtime.scaleout import sources


@pytest.mark.parametrize("source, path", [
    ("/srv/a.popef", Path("/srv/a.popef")),
    ("relative/a.popef", Path("relative/a.popef")),
    ("file:///srv/with%20space.popef", Path("/srv/with space.popef")),
    ("http://storage/a.popef", None),
    ("s3://bucket/a.popef", None),
])
def test_paths_and_uris(source, path):
    assert sources.local_path(source) == path


def test_a_uri_gives_its_header_and_is_copied_once(shelf, storage, tmp_path):
    uri = f"{storage}/a1.popef"
    assert sources.source_header(uri) == read_header(shelf.paths["a1"])
    copy = sources.local_copy(uri, tmp_path / "cache")
    assert copy.parent == tmp_path / "cache" and copy.read_bytes() == shelf.paths["a1"].read_bytes()
    copy.write_bytes(b"stale")
    assert sources.local_copy(uri, tmp_path / "cache").read_bytes() == b"stale"  # fetched once
    assert sources.local_copy(uri, tmp_path / "cache", refresh=True).read_bytes() == shelf.paths["a1"].read_bytes()
    assert sources.local_copy(str(shelf.paths["a1"]), tmp_path / "cache") == shelf.paths["a1"]


def test_unreadable_uris_are_artifact_errors(storage, tmp_path):
    with pytest.raises(ArtifactError, match=r"http://127.0.0.1:\d+/absent.popef: cannot read the artifact: .*404"):
        sources.source_header(f"{storage}/absent.popef")
    with pytest.raises(ArtifactError, match="absent.popef: cannot read the artifact"):
        sources.local_copy(f"{storage}/absent.popef", tmp_path)
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_a_scheme_whose_smart_open_support_is_missing_names_the_extra():
    # Azure's client is in no popfuse extra: smart_open refuses the scheme with an ImportError of its own.
    with pytest.raises(ArtifactError, match=r"azure://box/a.popef: smart_open reads such URIs only with its "
                                            r"'azure' support installed: pip install 'smart_open\[azure\]'"):
        sources.source_header("azure://box/a.popef")
