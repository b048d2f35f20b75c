"""Triton's restricted APIs: the flag's syntax, and the check both adapters make."""

from __future__ import annotations

import pytest

from popfuse.runtime.server.access import API_GROUPS, Restriction, Restrictions
from popfuse.runtime.server.errors import ForbiddenError, ServerConfigError


def test_the_flag_names_groups_a_header_and_its_value():
    r = Restriction.parse("model-repository,statistics:Admin-Key=s3cret=x")
    assert r.groups == {"model-repository", "statistics"} and r.key == "admin-key" and r.value == "s3cret=x"
    assert set(API_GROUPS) >= {"health", "metadata", "inference", "shared-memory", "model-config", "logging"}


@pytest.mark.parametrize("spec, match", [
    ("model-repository", "expected API"),
    ("model-repository:key", "expected API"),
    ("model-repository:key=", "expected API"),
    ("repository:key=v", "unknown API group"),
    ("inference:bad key=v", "not a valid header name"),
])
def test_malformed_flags_say_what_is_expected(spec, match):
    with pytest.raises(ServerConfigError, match=match):
        Restriction.parse(spec)


def test_a_restricted_group_needs_the_exact_header_and_others_stay_open():
    restrictions = Restrictions([Restriction.parse("model-repository:admin-key=s3cret")])
    headers = {"admin-key": "s3cret"}
    restrictions.check("model-repository", headers.get)
    restrictions.check("inference", {}.get)
    for given in ({}, {"admin-key": "S3CRET"}, {"admin-key": ""}):
        with pytest.raises(ForbiddenError, match="send the 'admin-key' header") as refused:
            restrictions.check("model-repository", given.get)
        assert "s3cret" not in str(refused.value)  # the value is never told
    assert restrictions.restricted() == {"model-repository": "admin-key"} and not Restrictions()


def test_a_group_restricted_twice_is_refused():
    with pytest.raises(ServerConfigError, match="restricted twice"):
        Restrictions([Restriction.parse("inference:a=1"), Restriction.parse("inference,health:b=2")])
