"""A task is data, lm-evaluation-harness style: where the examples come from, which prompt family they use, how the
answer is filtered out of the output, and which metric scores it."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Callable

from divcon.demos import demo_questions


@dataclass
class Example:
    id: str
    question: str
    golds: list[str]
    context: str | None = None
    meta: dict = field(default_factory=dict)


@dataclass
class Scored:
    answer: str | None
    answer_source: str
    metrics: dict[str, float]


FAMILIES = ("math", "reading", "openqa")  # the prompt families: each task is one of them


@dataclass
class Task:
    name: str
    family: str  # one of FAMILIES: picks the prompts
    splits: dict[str, Callable[[], list[Example]]]
    extract: Callable[[str], tuple[str | None, str]]
    score: Callable[[str | None, list[str], str], dict[str, float]]  # (answer, golds, full output) -> metrics
    primary: str
    description: str = ""
    default_split: str = "test"

    def examples(self, split: str | None = None, limit: int | None = None, offset: int = 0,
                 shuffle_seed: int | None = None) -> list[Example]:
        """A deterministic slice of a split. ``shuffle_seed`` picks a seeded random subset instead of the head.
        The few-shot demonstrations' questions are never among them."""
        split = split or self.default_split
        if split not in self.splits:
            raise ValueError(f"task {self.name!r} has no split {split!r}; splits: {', '.join(self.splits)}")
        shown = demo_questions()
        items = [e for e in self.splits[split]() if (e.question, e.context) not in shown]
        if shuffle_seed is not None:
            random.Random(shuffle_seed).shuffle(items)
        items = items[offset:]
        return items[:limit] if limit is not None else items

    def grade(self, output: str) -> tuple[str | None, str]:
        return self.extract(output or "")

    def evaluate(self, output: str, golds: list[str]) -> Scored:
        answer, source = self.grade(output)
        return Scored(answer, source, self.score(answer, golds, output or ""))
