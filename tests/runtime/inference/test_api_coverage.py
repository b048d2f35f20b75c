"""docs/inference.md's coverage table: what it says popfuse has, popfuse has; and (with the paddle extra) it names
every public name of the installed Paddle's paddle.inference, Config, Predictor and Tensor."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from popfuse.runtime import inference as paddle_infer

DOC = Path(__file__).parents[3] / "docs" / "inference.md"
ROW = re.compile(r"^\| `(?P<name>[\w.]+)` \| (?P<status>acts|no-op|missing) \| (?P<why>.+) \|$")


def coverage() -> dict[str, tuple[str, str]]:
    text = DOC.read_text()
    table = text[text.index("## Coverage of Paddle 3.3's API"):]
    rows = [ROW.match(line) for line in table.splitlines() if line.startswith("| `")]
    assert all(rows), [line for line, row in zip(table.splitlines(), rows) if not row]
    return {row["name"]: (row["status"], row["why"]) for row in rows}


def test_the_table_says_what_popfuse_has():
    rows = coverage()
    assert len(rows) > 140
    for name, (status, why) in rows.items():
        owner, _, attr = name.rpartition(".")
        has = hasattr(getattr(paddle_infer, owner) if owner else paddle_infer, attr)
        assert has == (status != "missing"), f"{name} is marked {status}"
        assert len(why) > 10, f"{name} needs its reason"


@pytest.mark.paddle
def test_the_table_covers_every_name_of_paddle_inference():
    from tests.runtime.inference.paddle_env import import_paddle

    inference = import_paddle().inference

    def public(obj) -> set[str]:
        return {n for n in dir(obj) if not n.startswith("_")}

    names = public(inference) | set(inference.__all__)
    for owner in ("Config", "Predictor", "Tensor"):
        names |= {f"{owner}.{n}" for n in public(getattr(inference, owner))}
    assert sorted(names - coverage().keys()) == []
