"""The claims page: verdicts from paired intervals, computed from run files, with missing evidence shown as such."""

import json

import pytest

from divcon.experiments.claims import FAILS, HOLDS, MISSING, UNDECIDED, Comparison, verdict, write_claims
from divcon.pipeline import PipelineConfig, prompts_fingerprint, settings_of


@pytest.mark.parametrize("kind,lo,hi,expected", [
    ("at_least", -0.02, 0.05, HOLDS),  # within the margin
    ("at_least", -0.20, -0.05, FAILS),  # worse beyond doubt
    ("at_least", -0.10, 0.04, UNDECIDED),
    ("below", -0.30, -0.20, HOLDS),
    ("below", -0.01, 0.08, FAILS),
    ("below", -0.15, 0.02, UNDECIDED),
    ("fewer_tokens", 2.1, 2.9, HOLDS),
    ("fewer_tokens", 0.5, 0.9, FAILS),
    ("fewer_tokens", 0.9, 1.2, UNDECIDED),
])
def test_verdicts(kind, lo, hi, expected):
    assert verdict(kind, lo, hi, 0.03) == expected


def test_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="unknown test kind"):
        Comparison(kind="better", a="x", b="y")


def write_run(d, correct: list[int], tokens: int, prompts: str | None = None):
    d.mkdir(parents=True)
    cfg = PipelineConfig()
    (d / "config.json").write_text(json.dumps({
        "task": "gsm8k", "split": "test", "mode": "two-stage", "decomposer": "fake:d", "solver": "fake:s",
        "pipeline": settings_of(cfg, "math"), "prompts": prompts or prompts_fingerprint(cfg, "math")}))
    with open(d / "records.jsonl", "w") as f:
        for i, c in enumerate(correct):
            f.write(json.dumps({"id": f"q{i}", "metrics": {"em": float(c)},
                                "usage": [{"tokens_in": tokens - 10, "tokens_out": 10}]}) + "\n")


def test_page_from_run_files(tmp_path):
    write_run(tmp_path / "runs" / "A", [1] * 40 + [0] * 10, 100)
    write_run(tmp_path / "runs" / "B", [0] * 40 + [1] * 10, 250, prompts="0123456789ab")
    (tmp_path / "claims.yaml").write_text("""
title: Claims
claims:
  - claim: A beats B
    paper: "1 vs 2"
    tests:
      - {what: toy, kind: at_least, a: runs/A, b: runs/B}
      - {what: toy tokens, kind: fewer_tokens, a: runs/A, b: runs/B}
  - claim: Not run yet
    tests:
      - {what: later, kind: below, a: runs/C, b: runs/B}
""")
    page = write_claims(tmp_path / "claims.yaml", tmp_path / "out" / "README.md", root=tmp_path).read_text()
    rows = [line for line in page.splitlines() if line.startswith("| ")][1:]  # after the header
    assert "| 50 |" in rows[0] and "em A 0.800 vs B 0.200: +0.600" in rows[0] and f"**{HOLDS}**" in rows[0]
    assert "current, older (0123456789ab)" in rows[0]  # B was made with other prompts, and the page says so
    assert "2.50x" in rows[1] and f"**{HOLDS}**" in rows[1]
    assert f"**{MISSING}**" in rows[2] and "Not run yet" in rows[2]
    assert "divcon claims claims.yaml --out out/README.md" in page  # paths relative to the root, none absolute
    assert str(tmp_path) not in page


def test_tokens_per_correct_answer_of_one_model(tmp_path):
    """The router's test (issue 12): the big model's tokens per correct answer. R pays the big model 100 tokens a
    question (its small decomposer's 300 do not count) and is right on 40 of 50; T pays 200 and is right on 25: T
    pays (200*50/25) / (100*50/40) = 3.2x as much per correct answer. Every model's tokens per question would say
    the opposite (400 vs 200)."""
    def run(d, correct, usage):
        d.mkdir(parents=True)
        (d / "config.json").write_text(json.dumps({"task": "gsm8k", "split": "test", "mode": "two-stage",
                                                   "decomposer": "fake:d", "solver": "fake:s"}))
        with open(d / "records.jsonl", "w") as f:
            for i, c in enumerate(correct):
                f.write(json.dumps({"id": f"q{i}", "metrics": {"em": float(c)}, "usage": usage}) + "\n")

    big, small = "llamacpp:big", "llamacpp:small"
    run(tmp_path / "R", [1] * 40 + [0] * 10, [{"model": small, "tokens_in": 250, "tokens_out": 50},
                                              {"model": big, "tokens_in": 80, "tokens_out": 20}])
    run(tmp_path / "T", [1, 0] * 25, [{"model": big, "tokens_in": 150, "tokens_out": 50}])
    from divcon.experiments.claims import evaluate_test

    t = evaluate_test(Comparison(kind="fewer_tokens_per_correct", a="R", b="T", model=big), tmp_path)
    assert t["estimate"] == pytest.approx(3.2) and t["ci95"][0] > 1 and t["verdict"] == HOLDS
    assert (t["a_mean"], t["b_mean"]) == (pytest.approx(125), pytest.approx(400))
    t = evaluate_test(Comparison(kind="fewer_tokens", a="R", b="T"), tmp_path)  # all models, per question
    assert t["estimate"] == pytest.approx(0.5) and t["verdict"] == FAILS
    with pytest.raises(ValueError, match="only applies to the token kinds"):
        Comparison(kind="at_least", a="R", b="T", model=big)
    run(tmp_path / "Z", [0] * 50, [{"model": big, "tokens_in": 1, "tokens_out": 1}])
    t = evaluate_test(Comparison(kind="fewer_tokens_per_correct", a="Z", b="T", model=big), tmp_path)
    assert t["verdict"] == UNDECIDED  # no correct answer: no cost per correct answer, and no verdict from it
