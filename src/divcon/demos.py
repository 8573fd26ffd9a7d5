"""The worked examples (few-shot demonstrations) shown to the models, per prompt family: data in
resources/demos.json, where each example's source is written. The prompts render them; the tasks drop their
questions, so a worked example is never also a scored question."""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources


@lru_cache(maxsize=None)
def _all() -> dict[str, tuple[dict, ...]]:
    data = json.loads(resources.files("divcon").joinpath("resources/demos.json").read_text(encoding="utf-8"))
    return {family: tuple(items) for family, items in data.items() if not family.startswith("_")}


def demos(family: str) -> tuple[dict, ...]:
    """A family's worked examples, in the order prompts show them."""
    return _all()[family]


def demo_questions() -> frozenset[tuple[str, str | None]]:
    """Every worked example's (question, passage); a passage-free example has None. The passage is part of the key
    because DROP asks the same question of many passages."""
    return frozenset((d["question"], d.get("context")) for items in _all().values() for d in items)
