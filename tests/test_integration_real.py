"""The two-stage pipeline for real on the smallest embedded model (SmolLM2-135M): structure and cost accounting,
not accuracy."""

import json

import pytest
from typer.testing import CliRunner

from divcon.cli import app
from divcon.cost import price_of
from divcon.runs import read_records
from tests.conftest import needs_smollm2

SMOL = "llamacpp:smollm2-135m"
pytestmark = [needs_smollm2, pytest.mark.slow]


def test_two_stage_eval_on_smollm2_records_structure_and_cost(tmp_path):
    out = tmp_path / "run"
    res = CliRunner().invoke(app, ["eval", "--task", "gsm8k", "--limit", "3", "--mode", "two-stage",
                                   "--decomposer", SMOL, "--solver", SMOL, "--solve-tokens", "96",
                                   "--decompose-tokens", "64",
                                   "--out", str(out)])
    assert res.exit_code == 0, res.output
    recs = read_records(out)
    assert sorted(r["id"] for r in recs) == ["gsm8k-test-0", "gsm8k-test-1", "gsm8k-test-2"]  # as each finished
    for r in recs:
        assert set(r["outputs"]) == {"decompose", "solve"}
        assert [u["stage"] for u in r["usage"]] == ["decompose", "solve"]
        for u in r["usage"]:
            assert u["model"] == SMOL and u["tokens_in"] > 20 and 0 < u["tokens_out"] <= 96 and u["seconds"] > 0
        assert r["usage"][1]["tokens_out"] <= 96
        assert r["answer_source"] in {"marker", "last_number", "none"}
        assert set(r["metrics"]) == {"em", "lenient"}
    summary = json.loads((out / "summary.json").read_text())
    tin = sum(u["tokens_in"] for r in recs for u in r["usage"])
    tout = sum(u["tokens_out"] for r in recs for u in r["usage"])
    assert (summary["tokens_in"], summary["tokens_out"]) == (tin, tout)
    assert summary["dollars"] == pytest.approx(price_of(SMOL).dollars(tin, tout))
    assert summary["big_model"] == SMOL and summary["n"] == 3

    # the same command again replays everything from the call log: no new records, same numbers
    again = CliRunner().invoke(app, ["eval", "--task", "gsm8k", "--limit", "3", "--mode", "two-stage",
                                     "--decomposer", SMOL, "--solver", SMOL, "--solve-tokens", "96",
                                     "--decompose-tokens", "64", "--out", str(out)])
    assert again.exit_code == 0 and len(read_records(out)) == 3
    assert json.loads((out / "summary.json").read_text())["tokens_out"] == tout


def test_solve_command_prints_subquestions_answer_and_cost(tmp_path):
    passage = tmp_path / "p.txt"
    passage.write_text("The Bears scored 14 points in the first half and 10 in the second half.")
    res = CliRunner().invoke(app, ["solve", "How many points did the Bears score?", "--context", str(passage),
                                   "--decomposer", SMOL, "--solver", SMOL, "--solve-tokens", "64"])
    assert res.exit_code == 0, res.output
    assert "Answer" in res.output and "decompose" in res.output and "solve" in res.output


def test_cli_errors_are_clear_not_tracebacks(tmp_path):
    r = CliRunner().invoke(app, ["solve", "   "])
    assert r.exit_code == 2 and "question is empty" in r.output
    r = CliRunner().invoke(app, ["eval", "--task", "gsm8k", "--limit", "1", "--solver", "llamacpp:nope-7b",
                                 "--out", str(tmp_path / "x")])
    assert r.exit_code == 2 and "unknown model alias" in r.output
    r = CliRunner().invoke(app, ["eval", "--task", "gsm8k", "--limit", "1", "--solver", SMOL,
                                 "--data-dir", str(tmp_path / "none"), "--out", str(tmp_path / "y")])
    assert r.exit_code == 2 and "data file not found" in r.output
