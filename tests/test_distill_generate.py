"""Trace generation with a scripted backend: one record per (question, sample), seeds per sample, scoring, and
resuming without duplicates or new model calls."""

from __future__ import annotations

import json

import pytest

from divcon.backends import ChatRequest, Generation, ModelSpec, register_backend
from divcon.distill.generate import generate_traces, is_correct
from divcon.runs import ConfigMismatch, read_records
from divcon.tasks import get_task
from divcon.tasks.datasets import DataMissing
from tests.fakes import is_decompose_prompt

CALLS: list[ChatRequest] = []


class Scripted:
    """Decomposer: seed 0 gives two subquestions, seed 1 says none are needed. Solver: always answers 10."""

    def __init__(self, spec: ModelSpec):
        self.spec = str(spec)

    def generate(self, requests: list[ChatRequest]) -> list[Generation]:
        out = []
        for r in requests:
            CALLS.append(r)
            if is_decompose_prompt(r):
                text = "1. How many in April?\n2. How many in May?" if r.seed == 0 else "No decomposition needed."
            else:
                text = "12 / 60 = 0.2, 0.2 x 50 = 10.\nThe answer is 10."
            out.append(Generation(text, 10, 5, 0.01, self.spec))
        return out


@pytest.fixture
def scripted():
    """The spec of the scripted teacher (conftest gives each test its own call log)."""
    register_backend("scripted", Scripted)
    CALLS.clear()
    try:
        get_task("gsm8k").examples("train", limit=2)
    except DataMissing:
        pytest.skip("GSM8K data not available")
    return "scripted:teacher"


def test_samples_are_seeded_scored_and_resumable(scripted, tmp_path):
    out = tmp_path / "traces"
    run_dir, summary = generate_traces("gsm8k", "train", scripted, samples=2, limit=2, out_dir=out)
    recs = read_records(run_dir)
    # train-0 is a few-shot demonstration, so never a trace: the first two are train-1 (gold 10) and train-4 (624)
    assert [(r["id"], r["sample"]) for r in recs] == [("gsm8k-train-1", 0), ("gsm8k-train-1", 1),
                                                      ("gsm8k-train-4", 0), ("gsm8k-train-4", 1)]
    assert recs[0]["subquestions"] == ["How many in April?", "How many in May?"]
    assert recs[1]["subquestions"] == [] and recs[1]["decomposer_output"] == "No decomposition needed."
    assert recs[0]["golds"] == ["10"] and recs[0]["correct"] and not recs[2]["correct"]
    assert summary == {"traces": 4, "questions": 2, "correct": 2, "accuracy": 0.5,
                       "questions_with_a_correct_trace": 1}
    config = json.loads((run_dir / "config.json").read_text())
    assert config["temperature"] == 0.7  # the default for several samples
    decomposer_calls = [c for c in CALLS if "subquestions" in c.messages[0][1]]
    assert sorted((c.seed, c.temperature) for c in decomposer_calls) == [(0, 0.7), (0, 0.7), (1, 0.7), (1, 0.7)]

    # a torn last record is redone; complete ones are not; the call log answers the redo without the model
    text = (run_dir / "records.jsonl").read_text()
    (run_dir / "records.jsonl").write_text(text[: text.rstrip("\n").rfind("\n") + 1] + '{"id": "gsm8k-tr')
    n_calls = len(CALLS)
    generate_traces("gsm8k", "train", scripted, samples=2, limit=2, out_dir=out)
    assert [(r["id"], r["sample"]) for r in read_records(run_dir)] == [(r["id"], r["sample"]) for r in recs]
    assert len(CALLS) == n_calls
    with pytest.raises(ConfigMismatch):
        generate_traces("gsm8k", "train", scripted, samples=1, limit=2, out_dir=out)


def test_greedy_single_sample_and_guard(scripted, tmp_path):
    run_dir, _ = generate_traces("gsm8k", "train", scripted, samples=1, limit=1, out_dir=tmp_path / "t1")
    assert json.loads((run_dir / "config.json").read_text())["temperature"] == 0.0
    assert all(c.temperature == 0.0 for c in CALLS)
    with pytest.raises(ValueError, match="temperature"):
        generate_traces("gsm8k", "train", scripted, samples=3, temperature=0.0, limit=1, out_dir=tmp_path / "t2")


def test_correct_means_exact_for_drop():
    assert is_correct(get_task("drop"), {"em": 1.0, "f1": 1.0})
    assert not is_correct(get_task("drop"), {"em": 0.0, "f1": 0.8})
    assert is_correct(get_task("gsm8k"), {"em": 1.0, "lenient": 1.0})
    assert not is_correct(get_task("bamboogle"), {"acc": 0.0, "lenient": 1.0})


def test_routes_add_single_stage_samples_after_the_two_stage_ones(scripted, tmp_path):
    run_dir, summary = generate_traces("gsm8k", "train", scripted, samples=2, limit=1, routes=True,
                                       out_dir=tmp_path / "routes")
    recs = read_records(run_dir)
    assert [(r["sample"], r["route"]) for r in recs] == [(0, "two-stage"), (1, "two-stage"), (2, "single"),
                                                         (3, "single")]
    single = [r for r in recs if r["route"] == "single"]
    assert all(r["subquestions"] == [] and r["decomposer_output"] == "" and r["correct"] for r in single)
    solver_calls = [c for c in CALLS if not is_decompose_prompt(c)]
    # the two two-stage solves are greedy; the step-by-step route samples like the decomposer does (temperature 0.7,
    # seeds 0 and 1), since greedy samples would all be the same
    assert sorted((c.seed, c.temperature) for c in solver_calls) == [(0, 0.0), (0, 0.0), (0, 0.7), (1, 0.7)]
    assert json.loads((run_dir / "config.json").read_text())["routes"] is True
    assert summary["traces"] == 4
