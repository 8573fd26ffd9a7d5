"""Training-set building from a hand-made traces dir: exact counts per variant, correctness filtering, de-duplication,
the 'No decomposition needed.' rule, best-only choice and gold-answer substitution."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from divcon.distill.build import build_dataset, decomposition_won, with_gold_answer
from divcon.pipeline import prompts as P


def trace(qid: str, sample: int, subs: list[str], solution: str, correct: bool, gold: str,
          decomposer_output: str | None = None) -> dict:
    return {"id": qid, "sample": sample, "task": "gsm8k", "family": "math", "max_subquestions": 4,
            "question": f"Question {qid}?", "context": None, "golds": [gold], "subquestions": subs,
            "decomposer_output": decomposer_output if decomposer_output is not None else P.format_subquestions(subs),
            "solution": solution, "answer": None, "correct": correct, "metrics": {"em": float(correct)}, "usage": []}


TRACES = [
    # q1: two samples with the same decomposition and solution -> the second is a duplicate everywhere
    trace("q1", 0, ["How many apples?", "How many pears?"], "3 + 15 = 18. The answer is 18.", True, "18"),
    trace("q1", 1, ["How many apples?", "How many pears?"], "3 + 15 = 18. The answer is 18.", True, "18"),
    # q2: one wrong sample, one right one
    trace("q2", 0, ["What is a?", "What is b?", "What is c?"], "a+b+c = 5.\nThe answer is 5.", False, "6"),
    trace("q2", 1, ["What is a plus b?"], "a+b = 6. The answer is 6.", True, "6"),
    # q3: the decomposer says no decomposition is needed: a legitimate SD target
    trace("q3", 0, [], "6 + 1 = 7. The answer is 7.", True, "7", decomposer_output="No decomposition needed."),
    # q4: nothing parseable and no 'no decomposition': unparseable for SD; the solution has no answer marker
    trace("q4", 0, [], "2 + 8 = 10", True, "10", decomposer_output="Let me think: first add them."),
    # q5: two different correct decompositions -> sd-r keeps both, best-only the shorter (sample 1)
    trace("q5", 0, ["What is x?", "What is y?", "What is x + y?"], "x+y = 9. The answer is 9.", True, "9"),
    trace("q5", 1, ["What is x?", "What is x + y?"], "x+y = 9. The answer is 9.", True, "9"),
]


@pytest.fixture
def traces_dir(tmp_path: Path) -> Path:
    d = tmp_path / "traces"
    d.mkdir()
    (d / "records.jsonl").write_text("".join(json.dumps(t) + "\n" for t in TRACES), encoding="utf-8")
    return d


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.mark.parametrize("variant, best_only, kept, dropped, kept_ids", [
    ("sd-t", False, 6, {"unparseable": 1, "duplicate": 1}, [("q1", 0), ("q2", 0), ("q2", 1), ("q3", 0), ("q5", 0),
                                                            ("q5", 1)]),
    ("sd-r", False, 5, {"incorrect": 1, "unparseable": 1, "duplicate": 1},
     [("q1", 0), ("q2", 1), ("q3", 0), ("q5", 0), ("q5", 1)]),
    ("sd-r", True, 4, {"incorrect": 1, "unparseable": 1, "duplicate": 1, "not_best": 1},
     [("q1", 0), ("q2", 1), ("q3", 0), ("q5", 1)]),
    ("se-t", False, 7, {"duplicate": 1}, [("q1", 0), ("q2", 0), ("q2", 1), ("q3", 0), ("q4", 0), ("q5", 0),
                                          ("q5", 1)]),
    ("se-a", False, 7, {"duplicate": 1}, [("q1", 0), ("q2", 0), ("q2", 1), ("q3", 0), ("q4", 0), ("q5", 0),
                                          ("q5", 1)]),
])
def test_counts_per_variant(traces_dir, tmp_path, variant, best_only, kept, dropped, kept_ids):
    out = tmp_path / f"{variant}.jsonl"
    counts = build_dataset(traces_dir, variant, out, best_only=best_only)
    assert counts["traces"] == 8 and counts["questions"] == 5
    assert counts["kept"] == kept
    assert counts["dropped"] == dropped
    assert counts["kept"] + sum(counts["dropped"].values()) == counts["traces"]
    data = rows(out)
    assert [(r["id"], r["sample"]) for r in data] == kept_ids
    assert all(r["variant"] == variant for r in data)
    assert all([m["role"] for m in r["messages"]] == ["system", "user", "assistant"] for r in data)
    assert json.loads(out.with_suffix(".counts.json").read_text()) == counts


def test_sd_targets_and_prompts(traces_dir, tmp_path):
    out = tmp_path / "sd.jsonl"
    counts = build_dataset(traces_dir, "sd-r", out)
    assert counts["kept_no_decomposition"] == 1
    by_key = {(r["id"], r["sample"]): r["messages"] for r in rows(out)}
    assert by_key[("q1", 0)][:2] == P.decompose_messages("Question q1?", None, "math", 4)
    assert by_key[("q1", 0)][2]["content"] == "1. How many apples?\n2. How many pears?"
    assert by_key[("q3", 0)][2]["content"] == P.NO_DECOMPOSITION
    assert all(r["id"] != "q2" or r["sample"] == 1 for r in rows(out)), "the incorrect q2 sample leaked into SD-R"


def test_se_a_substitutes_gold(traces_dir, tmp_path):
    out = tmp_path / "se_a.jsonl"
    build_dataset(traces_dir, "se-a", out)
    by_key = {(r["id"], r["sample"]): r["messages"] for r in rows(out)}
    assert by_key[("q2", 0)][2]["content"] == "a+b+c = 5.\nThe answer is 6."  # wrong teacher answer corrected
    assert by_key[("q4", 0)][2]["content"] == "2 + 8 = 10\nThe answer is 10."  # no marker: appended
    assert by_key[("q4", 0)][:2] == P.solve_messages("Question q4?", None, "math", None)  # step-by-step prompt
    assert by_key[("q2", 0)][:2] == P.solve_messages("Question q2?", None, "math",
                                                     ["What is a?", "What is b?", "What is c?"])
    se_t = tmp_path / "se_t.jsonl"
    build_dataset(traces_dir, "se-t", se_t)
    assert {(r["id"], r["sample"]): r["messages"] for r in rows(se_t)}[("q2", 0)][2]["content"].endswith("is 5.")


def test_with_gold_answer_uses_last_marker():
    text = "Step: the answer is 3 for part one.\nThe answer is 4.\nExtra chatter"
    assert with_gold_answer(text, "12") == "Step: the answer is 3 for part one.\nThe answer is 12."


def test_with_gold_answer_reads_every_scorer_marker():
    assert with_gold_answer("3 + 4 = 7.\nThe final answer is 7.", "8") == "3 + 4 = 7.\nThe final answer is 8."
    assert with_gold_answer("So 7.\n#### 7", "8") == "So 7.\n#### 8."
    assert with_gold_answer("So it is 7", "8") == "So it is 7\nThe answer is 8."


def test_rejects_bad_arguments(traces_dir, tmp_path):
    with pytest.raises(ValueError, match="unknown variant"):
        build_dataset(traces_dir, "sd-x", tmp_path / "x.jsonl")
    with pytest.raises(ValueError, match="best_only"):
        build_dataset(traces_dir, "se-t", tmp_path / "x.jsonl", best_only=True)


def test_accepts_a_records_file(traces_dir, tmp_path):
    counts = build_dataset(traces_dir / "records.jsonl", "sd-t", tmp_path / "f.jsonl")
    assert counts["kept"] == 6


def routed(qid: str, sample: int, route: str, correct: bool, subs: list[str] | None = None) -> dict:
    t = trace(qid, sample, subs or [], "The answer is 1.", correct, "1",
              decomposer_output="" if route == "single" else None)
    return {**t, "route": route}


ROUTE_TRACES = [
    # r1: both routes right -> the decomposition is the target; the single-stage traces are not needed
    routed("r1", 0, "two-stage", True, ["What is a?", "What is b?"]),
    routed("r1", 1, "two-stage", False, ["What is c?"]),
    routed("r1", 2, "single", True),
    routed("r1", 3, "single", True),
    # r2: only single-stage right (once of twice) -> "No decomposition needed." once
    routed("r2", 0, "two-stage", False, ["What is a?"]),
    routed("r2", 1, "two-stage", False, ["What is b?"]),
    routed("r2", 2, "single", True),
    routed("r2", 3, "single", True),
    # r3: neither route right -> dropped
    routed("r3", 0, "two-stage", False, ["What is a?"]),
    routed("r3", 1, "two-stage", False, ["What is a?"]),
    routed("r3", 2, "single", False),
    routed("r3", 3, "single", False),
    # r4: two different right decompositions, single wrong -> both decompositions
    routed("r4", 0, "two-stage", True, ["What is x?"]),
    routed("r4", 1, "two-stage", True, ["What is y?", "What is z?"]),
    routed("r4", 2, "single", False),
    routed("r4", 3, "single", True),
]


@pytest.fixture
def routes_dir(tmp_path: Path) -> Path:
    """ROUTE_TRACES as a traces dir."""
    d = tmp_path / "routes"
    d.mkdir()
    (d / "records.jsonl").write_text("".join(json.dumps(t) + "\n" for t in ROUTE_TRACES), encoding="utf-8")
    return d


def test_sd_route_targets_the_route_that_reached_gold(tmp_path: Path, routes_dir: Path):
    counts = build_dataset(routes_dir, "sd-route", tmp_path / "sd-route.jsonl")
    got = [(r["id"], r["sample"], r["messages"][-1]["content"]) for r in rows(tmp_path / "sd-route.jsonl")]
    assert got == [("r1", 0, "1. What is a?\n2. What is b?"), ("r2", 2, P.NO_DECOMPOSITION),
                   ("r4", 0, "1. What is x?"), ("r4", 1, "1. What is y?\n2. What is z?")]
    assert counts["kept"] == 4 and counts["kept_questions"] == 3 and counts["kept_no_decomposition"] == 1
    assert counts["route_questions"] == {"decompose": 2, "direct": 1, "neither": 1}
    # won: r1 and r4 singles (4); incorrect: r1 one, r2 two two-stage, r3 all four (7); duplicate: r2 sample 3
    assert counts["dropped"] == {"decomposition_won": 4, "incorrect": 7, "duplicate": 1}
    assert sum(counts["dropped"].values()) + counts["kept"] == counts["traces"] == 16
    # the student is trained on the bare decomposer prompt it is later served
    first = rows(tmp_path / "sd-route.jsonl")[0]["messages"]
    assert first[:-1] == P.decompose_messages("Question r1?", None, "math", 4)


def test_sd_route_cheap_decomposes_only_where_two_stage_beat_single_stage(tmp_path: Path, routes_dir: Path):
    counts = build_dataset(routes_dir, "sd-route-cheap", tmp_path / "cheap.jsonl")
    got = [(r["id"], r["sample"], r["messages"][-1]["content"]) for r in rows(tmp_path / "cheap.jsonl")]
    # r1: single 2/2 beats two-stage 1/2 -> no decomposition (sd-route taught the decomposition here); r4: 2/2 vs 1/2
    assert got == [("r1", 2, P.NO_DECOMPOSITION), ("r2", 2, P.NO_DECOMPOSITION),
                   ("r4", 0, "1. What is x?"), ("r4", 1, "1. What is y?\n2. What is z?")]
    assert counts["route_questions"] == {"decompose": 1, "direct": 2, "neither": 1}
    assert counts["kept_no_decomposition"] == 2
    # won by two-stage: r4's singles (2); incorrect: r1 one, r2 two, r3 four (7); direct_won: r1's right
    # decomposition (1); duplicate: r1 and r2 sample 3 (2)
    assert counts["dropped"] == {"decomposition_won": 2, "incorrect": 7, "direct_won": 1, "duplicate": 2}
    assert sum(counts["dropped"].values()) + counts["kept"] == counts["traces"] == 16


def test_a_tie_between_the_routes_goes_to_the_cheaper_one_only_under_sd_route_cheap():
    tie = [routed("t", 0, "two-stage", True, ["What is a?"]), routed("t", 1, "two-stage", False, ["What is b?"]),
           routed("t", 2, "single", True), routed("t", 3, "single", False)]
    assert decomposition_won(tie, "sd-route") == {"t"}
    assert decomposition_won(tie, "sd-route-cheap") == set()
    # shares, not counts: one right of one two-stage sample (the other could not run) beats one of two single-stage
    uneven = [{**tie[0]}, {**tie[1], "error": "prompt too long"}, tie[2], tie[3]]
    assert decomposition_won(uneven, "sd-route-cheap") == {"t"}


def test_sd_route_needs_both_routes_and_other_variants_ignore_single_stage_traces(tmp_path: Path, traces_dir: Path,
                                                                                   routes_dir: Path):
    with pytest.raises(ValueError, match="--routes"):
        build_dataset(traces_dir, "sd-route", tmp_path / "x.jsonl")
    counts = build_dataset(routes_dir, "sd-r", tmp_path / "sd-r.jsonl")
    assert counts["traces"] == 8 and counts["kept"] == 3  # r1 sample 0, r4 samples 0 and 1
