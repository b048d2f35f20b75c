"""The catalog: artifacts and their models from the headers, settings passed through, and errors that name
the entry, all before anything starts."""

from __future__ import annotations

import shutil

import pytest
import yaml

from popfuse.runtime.scaleout.catalog import CatalogError, load_catalog, parse_size
from tests.models import scale_model


def test_models_and_sizes_come_from_the_headers(shelf, storage, tmp_path):
    path = shelf.catalog(tmp_path / "catalog.yaml", artifacts={
        "a0": str(shelf.paths["a0"]), "a1": "a1.popef", "a2": f"{storage}/a2.popef"})
    shutil.copy(shelf.paths["a1"], tmp_path / "a1.popef")
    catalog = load_catalog(path)
    assert catalog.artifacts["a1"].source == str(tmp_path / "a1.popef")  # relative to the catalog's folder
    assert {n: a.models for n, a in catalog.artifacts.items()} == {
        a: [f"{a}m{k}" for k in range(3)] for a in ("a0", "a1", "a2")}
    assert {n: a.size for n, a in catalog.artifacts.items()} == shelf.sizes
    assert catalog.owner("a2m1").name == "a2" and catalog.owner("nope") is None
    assert catalog.replicas.memory_budget == 2 * max(shelf.sizes.values()) + min(shelf.sizes.values()) // 2
    assert (catalog.replicas.workers, catalog.replicas.threads, catalog.replicas.ray) == (1, None, {})
    assert (catalog.ingress.max_pending, catalog.ingress.ray) == (256, {})


def test_scaling_settings_pass_through(shelf, tmp_path):
    replicas = {"memory_budget": "1 MiB", "autoscaling_config": {"min_replicas": 1, "max_replicas": 4},
                "max_ongoing_requests": 8, "ray_actor_options": {"num_cpus": 2, "memory": 2**30},
                "threads": 2}
    ingress = {"num_replicas": 3, "ray_actor_options": {"num_cpus": 0.5}, "max_pending": 64,
               "grpc_restricted_api": ["model-repository,statistics:Admin-Key=s3cret"]}
    catalog = load_catalog(shelf.catalog(tmp_path / "c.yaml", replicas=replicas, ingress=ingress))
    assert catalog.replicas.ray == {k: replicas[k] for k in
                                    ("autoscaling_config", "max_ongoing_requests", "ray_actor_options")}
    assert (catalog.replicas.memory_budget, catalog.replicas.threads) == (2**20, 2)
    assert catalog.replicas.workers == 2  # one per CPU the replica reserves
    assert catalog.ingress.ray == {"num_replicas": 3, "ray_actor_options": {"num_cpus": 0.5}}
    assert catalog.ingress.max_pending == 64
    (restriction,) = catalog.ingress.grpc_restricted
    assert (restriction.groups, restriction.key) == ({"model-repository", "statistics"}, "admin-key")
    assert catalog.ingress.http_restricted == ()


@pytest.mark.parametrize("text, size", [
    (1000, 1000), ("512MiB", 512 * 2**20), ("1.5 GB", 1_500_000_000), ("64 kib", 65536), ("12", 12),
    ("lots", None), ("5 parsecs", None), (True, None), (None, None), ("-3 MB", None),
])
def test_sizes(text, size):
    assert parse_size(text) == size


def clash(tmp_path, make_artifact):
    """An artifact with a model named like one of the shelf's (a1m2)."""
    from popfuse.fusion import ModelOptions

    return make_artifact([scale_model()], [ModelOptions(name="a1m2")], name="clash.popef")


@pytest.mark.parametrize("change, message", [
    (lambda doc, shelf, extra: doc["artifacts"].update(gone="gone.popef"),
     r"c.yaml: artifacts.gone: .*gone.popef: no such artifact file"),
    (lambda doc, shelf, extra: doc["artifacts"].update(text=str(extra["text"])),
     r"c.yaml: artifacts.text: .*text.popef: blob 0 at byte 0: bad magic .*not a popfuse artifact"),
    (lambda doc, shelf, extra: doc["artifacts"].update(z=str(extra["clash"])),
     r"c.yaml: artifacts 'a1' and 'z' both serve a model named 'a1m2'"),
    (lambda doc, shelf, extra: doc["replicas"].update(memory_budget=min(shelf.sizes.values()) - 1),
     r"c.yaml: replicas.memory_budget is .*, smaller than artifact 'a0' \(.*\): no replica could hold it"),
    (lambda doc, shelf, extra: doc["replicas"].pop("memory_budget"), r"c.yaml: replicas.memory_budget is required"),
    (lambda doc, shelf, extra: doc["replicas"].update(memory_budget="plenty"),
     r"replicas.memory_budget must be a positive byte count .* received 'plenty'"),
    (lambda doc, shelf, extra: doc["replicas"].update(num_replica=2),
     r"c.yaml: unknown key replicas.num_replica; did you mean 'num_replicas'\?"),
    (lambda doc, shelf, extra: doc.update(ingres={}), r"unknown key ingres; did you mean 'ingress'\?"),
    (lambda doc, shelf, extra: doc["replicas"].update(num_replicas=0),
     r"replicas.num_replicas must be a whole number of at least 1, received 0"),
    (lambda doc, shelf, extra: doc["replicas"].update(num_replicas=2, autoscaling_config={"max_replicas": 4}),
     r"replicas sets both num_replicas and autoscaling_config"),
    (lambda doc, shelf, extra: doc.update(ingress={"ray_actor_options": 1}),
     r"ingress.ray_actor_options must be a mapping, received 1"),
    (lambda doc, shelf, extra: doc.update(artifacts={}), r"'artifacts' must map each artifact's name"),
    (lambda doc, shelf, extra: doc.update(ingress={"http_restricted_api": "inference:k=v"}),
     r"ingress.http_restricted_api must be a list of 'API\[,API...\]:KEY=VALUE' strings, received 'inference:k=v'"),
    (lambda doc, shelf, extra: doc.update(ingress={"grpc_restricted_api": ["inferense:k=v"]}),
     r"c.yaml: ingress.grpc_restricted_api: restricted API 'inferense:k=v': unknown API group\(s\) 'inferense'"),
    (lambda doc, shelf, extra: doc.update(ingress={"grpc_restricted_api": ["inference:k=v", "inference:j=w"]}),
     r"ingress.grpc_restricted_api: API group 'inference' is restricted twice"),
])
def test_a_bad_catalog_is_refused_naming_the_entry(shelf, tmp_path, make_artifact, change, message):
    extra = {"clash": clash(tmp_path, make_artifact), "text": tmp_path / "text.popef"}
    extra["text"].write_text("this is not an artifact but a note of some length")
    path = shelf.catalog(tmp_path / "c.yaml")
    doc = yaml.safe_load(path.read_text())
    change(doc, shelf, extra)
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(CatalogError, match=message):
        load_catalog(path)


def test_unreadable_catalog_files(tmp_path):
    with pytest.raises(CatalogError, match="absent.yaml: no such catalog file"):
        load_catalog(tmp_path / "absent.yaml")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(CatalogError, match="list.yaml: expected a mapping with 'artifacts' and 'replicas'"):
        load_catalog(tmp_path / "list.yaml")
    (tmp_path / "broken.yaml").write_text("artifacts: [\n")
    with pytest.raises(CatalogError, match="broken.yaml: cannot read the catalog"):
        load_catalog(tmp_path / "broken.yaml")


@pytest.mark.parametrize("keys, message", [
    (["absent.pub"], r"replicas\.trusted_keys\[0\]: .*absent\.pub"),
    ("ops.pub", r"replicas\.trusted_keys must be a list of public key files"),
    (["not-a-key.pub"], r"replicas\.trusted_keys\[0\]: .*not-a-key\.pub: not an Ed25519 public key in PEM or "
                        r"OpenSSH format"),
])
def test_trusted_keys_that_cannot_be_used_are_named(shelf, tmp_path, keys, message):
    # A line such as a YAML mapping's, which OpenSSH's reader answers with an exception of its own.
    (tmp_path / "not-a-key.pub").write_text("artifacts: {s: signed.popef}\n")
    path = shelf.catalog(tmp_path / "c.yaml", replicas={"memory_budget": "1 GiB", "trusted_keys": keys})
    with pytest.raises(CatalogError, match=message):
        load_catalog(path)
