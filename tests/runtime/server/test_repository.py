"""The repository without HTTP: atomic loads of real artifacts, reloads, unloads, clashes and failed loads."""

from __future__ import annotations

import numpy as np
import pytest

from popfuse.fusion import ModelOptions
from popfuse.runtime.config import RuntimeConfig
from popfuse.runtime.server.errors import BadRequestError, ModelNotFoundError, UnavailableError
from popfuse.runtime.server.repository import FixedRepository, Repository
from tests.models import scale_model

LENIENT = RuntimeConfig(validate_io_params=False)


class Tracked:
    """A loaded model as served, that remembers whether the repository closed it."""

    def __init__(self, model):
        self.model, self.name, self.artifact, self.inputs = model, model.name, model.artifact, model.inputs
        self.closed = False

    def close(self) -> None:
        self.closed = True


class Attached:
    """An ``attach`` that records every model the repository attaches."""

    def __init__(self):
        self.models: list[Tracked] = []

    def __call__(self, model) -> Tracked:
        self.models.append(Tracked(model))
        return self.models[-1]


def test_load_publishes_every_subgraph_under_its_own_name(make_artifact):
    path = make_artifact([scale_model(2.0), scale_model(3.0)], [ModelOptions(name="a"), ModelOptions(name="b")])
    attach = Attached()
    repo = Repository([path], LENIENT, attach)
    assert repo.load("executable") == ["a", "b"]
    a = repo.get("a")
    assert [s.name for s in a.inputs] == ["X"] and a.artifact == "executable"
    np.testing.assert_allclose(a.model.predict({"X": np.ones((1, 4), np.float32)})["O"], [[2, 3, 4, 5]])
    index = {e["name"]: e for e in repo.index()}
    assert index["executable"]["state"] == "READY" and index["a"]["artifact"] == "executable"


def test_reload_and_unload_close_the_models_they_replace(make_artifact):
    path = make_artifact([scale_model(2.0)], [ModelOptions(name="a")])
    attach = Attached()
    repo = Repository([path], LENIENT, attach)
    repo.load("executable")
    first = repo.get("a")
    repo.load("executable")
    assert first.closed and repo.get("a") is not first
    repo.unload("executable")
    assert attach.models[-1].closed
    with pytest.raises(ModelNotFoundError, match="loaded models: none"):
        repo.get("a")
    assert {e["name"]: e for e in repo.index()}["executable"]["reason"] == "unloaded"


def test_two_artifacts_may_not_serve_one_model_name(make_artifact):
    one = make_artifact([scale_model()], [ModelOptions(name="same")], name="one.popef")
    two = make_artifact([scale_model()], [ModelOptions(name="same")], name="two.popef")
    repo = Repository([one, two], LENIENT, Attached())
    repo.load("one")
    with pytest.raises(BadRequestError, match="artifact 'two' has a model 'same', which artifact 'one' already serves"):
        repo.load("two")
    assert repo.get("same").artifact == "one"


def test_a_failed_load_is_reported_and_serving_goes_on(make_artifact, tmp_path):
    good = make_artifact([scale_model()], [ModelOptions(name="good")])
    broken = tmp_path / "broken.popef"
    broken.write_bytes(b"not an artifact, but long enough for a header")
    repo = Repository([good, broken], LENIENT, Attached())
    repo.load("executable")
    with pytest.raises(UnavailableError, match="artifact 'broken' failed to load: .*not a popfuse artifact"):
        repo.load("broken")
    assert {e["name"]: e for e in repo.index()}["broken"]["state"] == "UNAVAILABLE"
    assert repo.get("good") is not None
    with pytest.raises(ModelNotFoundError, match="unknown artifact 'ghost'"):
        repo.load("ghost")


def test_a_fixed_repository_serves_given_models_and_refuses_to_unload_them():
    from tests.runtime.server.toys import SumModel

    repo = FixedRepository([SumModel()], Attached())
    assert repo.load("sum") == ["sum"] and [m.name for m in repo.models()] == ["sum"]
    with pytest.raises(BadRequestError, match="fixed models; it cannot be unloaded"):
        repo.unload("sum")
    with pytest.raises(ModelNotFoundError, match="unknown model 'other'; models: sum"):
        repo.get("other")
