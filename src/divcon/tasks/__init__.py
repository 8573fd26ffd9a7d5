"""The task registry. Each entry is data: splits, prompt family, answer filter, metric.

Held-out care: DROP and Bamboogle have no train split here, so each is split deterministically (by sha256 of the
passage / question) into ``distill`` and ``eval`` parts that never overlap; distill on one, evaluate on the other.
Prompts and settings are tuned on ``dev`` splits only, which no teacher trace uses: GSM8K's is train[7000:] (its
``train`` split is train[:7000]), DROP's the last quarter of the distill half's passages (its ``distill`` split is the
rest). Test/eval splits are for reporting, never for tuning.
"""

from __future__ import annotations

from functools import partial

from divcon.tasks import datasets as ds
from divcon.tasks.answers import extract_choice, extract_math, extract_text
from divcon.tasks.base import Example, Scored, Task
from divcon.tasks.metrics import (choice_acc, choice_lenient, drop_score, numeric_em, numeric_lenient, open_em,
                                  open_lenient)


def _math_score(answer: str | None, golds: list[str], output: str) -> dict[str, float]:
    return {"em": numeric_em(answer, golds), "lenient": numeric_lenient(output, golds)}


def _drop_score(answer: str | None, golds: list[str], output: str) -> dict[str, float]:
    return drop_score(answer, golds)


def _open_score(answer: str | None, golds: list[str], output: str) -> dict[str, float]:
    return {"acc": open_em(answer, golds), "lenient": open_lenient(output, golds)}


def _choice_score(answer: str | None, golds: list[str], output: str) -> dict[str, float]:
    return {"acc": choice_acc(answer, golds), "lenient": choice_lenient(output, golds)}


def _math(name: str, loader, description: str, splits: dict | None = None, default_split: str = "test") -> Task:
    return Task(name, "math", splits or {"test": loader}, extract_math, _math_score, "em", description, default_split)


def _openqa(name: str, *path: str, description: str, default_split: str = "test") -> Task:
    load = partial(ds.json_qa, *path)
    return Task(name, "openqa",
                {"test": load, "distill": lambda: ds.hash_part(load(), "distill"),
                 "eval": lambda: ds.hash_part(load(), "eval")},
                extract_text, _open_score, "acc", description, default_split)


TASKS: dict[str, Task] = {
    t.name: t
    for t in [
        _math("gsm8k", None, "GSM8K grade-school math; numeric exact match on the final answer",
              {"train": partial(ds.gsm8k_train, "train"), "dev": partial(ds.gsm8k_train, "dev"),
               "test": partial(ds.gsm8k, "test")}),
        Task("drop", "reading",
             {"all": ds.drop_dev, "distill": partial(ds.drop_split, "distill"), "dev": partial(ds.drop_split, "dev"),
              "eval": partial(ds.drop_split, "eval")},
             extract_text, _drop_score, "f1",
             "DROP reading comprehension; official-style F1/EM, max over gold answers; split by passage", "eval"),
        _openqa("bamboogle", "bamboogle", "bamboogle_test_questions_and_answers.json",
                description="Bamboogle 2-hop open QA (125); normalised EM, lenient 'gold in output' as extra",
                default_split="eval"),
        _math("svamp", ds.svamp, "SVAMP arithmetic word problems (1000)"),
        _math("multiarith", ds.multiarith, "MultiArith (600)"),
        _math("asdiv", ds.asdiv, "ASDiv, numeric-answer problems"),
        Task("aqua", "math", {"dev": partial(ds.aqua, "dev"), "test": partial(ds.aqua, "test")}, extract_choice,
             _choice_score, "acc", "AQuA-RAT multiple-choice algebra (254 test); accuracy on the chosen letter, or "
             "the correct option's exact text; gold = letter and option"),
        _openqa("hotpotqa", "hotpotqa", "dev.json", description="HotpotQA dev questions (closed book)"),
        _openqa("2wiki", "2wikimultihopqa", "2wikimultihop_test_questions_and_answers.json",
                description="2WikiMultihopQA dev questions (closed book)"),
        _openqa("musique", "musique", "musique_test_questions_and_answers.json",
                description="MuSiQue-Ans dev questions (closed book)"),
    ]
}
def get_task(name: str) -> Task:
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; tasks: {', '.join(TASKS)}") from None


__all__ = ["Example", "Scored", "TASKS", "Task", "get_task"]
