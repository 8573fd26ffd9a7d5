"""Pipelines and the eval runner on a scripted backend: structure, bad input, resume after a crash."""

import json

import pytest

from divcon.backends import register_backend
from divcon.evaluate import evaluate
from divcon.pipeline import Pipeline, PipelineConfig
from divcon.pipeline.prompts import format_subquestions, parse_subquestions
from divcon.backends import load_backend
from divcon.runs import ConfigMismatch, read_records
from divcon.tasks import get_task
from divcon.tasks.base import Example
from tests.fakes import ScriptedBackend


@pytest.fixture(autouse=True)
def fake_backends():
    register_backend("fake", ScriptedBackend)
    register_backend("silent", lambda spec: ScriptedBackend(spec, decompose="Sure! Let me think.", solve=""))


def test_parse_subquestions_formats():
    text = "Here are the subquestions:\n1. How many eggs?\n2) How much money?\n- How much money?\nQ3: Total?\nAnswer: 5"
    assert parse_subquestions(text) == ["How many eggs?", "How much money?", "Total?"]
    assert parse_subquestions("No decomposition needed.") == []
    assert parse_subquestions(format_subquestions(["Is A big?", "Is B?"])) == ["Is A big?", "Is B?"]
    assert len(parse_subquestions("\n".join(f"{i}. What is part {i}?" for i in range(1, 9)), max_subquestions=4)) == 4


def test_two_stage_records_subquestions_outputs_and_usage():
    pipe = Pipeline(PipelineConfig(mode="two-stage"), solver=load_backend("fake:solver"),
                    decomposer=load_backend("fake:decomposer"))
    r = pipe.run([Example("x", "Q?", ["18"])], "math")[0]
    assert r.subquestions == ["How many?", "How much?"]
    assert r.final_output == "The answer is 18."
    assert [(u.stage, u.model, u.tokens_in, u.tokens_out, u.calls) for u in r.usage] == [
        ("decompose", "fake:decomposer", 100, 20, 1), ("solve", "fake:solver", 100, 20, 1)]


def test_dynamic_interleaves_and_costs_more_than_static():
    ex = [Example("x", "Q?", ["18"])]
    static = Pipeline(PipelineConfig(mode="two-stage"), load_backend("fake:m")).run(ex, "math")[0]
    dyn = Pipeline(PipelineConfig(mode="dynamic", max_rounds=3), load_backend("fake:m")).run(ex, "math")[0]
    assert dyn.subquestions == ["How many?"]  # the scripted decomposer repeats itself: the loop stops on a repeat
    assert sum(u.calls for u in dyn.usage) > sum(u.calls for u in static.usage)


def test_empty_question_is_a_clear_error():
    with pytest.raises(ValueError, match="empty question"):
        Pipeline(PipelineConfig(), load_backend("fake:m")).run([Example("e", "  ", ["1"])], "math")


def test_unknown_mode_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown mode"):
        PipelineConfig(mode="magic")


def test_no_subquestions_and_no_answer_are_scored_not_crashed(tmp_path):
    run_dir, summary = evaluate("gsm8k", solver="silent:m", decomposer="silent:m", limit=2, out=tmp_path / "run")
    recs = read_records(run_dir)
    assert [r["subquestions"] for r in recs] == [[], []]
    assert [r["answer_source"] for r in recs] == ["none", "none"]
    assert summary["metrics"]["em"] == 0.0 and summary["answer_source"] == {"none": 2}


def test_missing_data_file_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("DIVCON_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="data file not found.*DIVCON_DATA"):
        get_task("svamp").examples()


class Crash(Exception):
    pass


def test_resume_after_interruption_gives_exactly_n_records(tmp_path):
    """Kill the run after 3 examples (plus a torn half-written line), restart: exactly N records, none twice."""
    budget = {"left": 7}

    class Flaky(ScriptedBackend):
        def generate(self, requests):
            if budget["left"] <= 0:
                raise Crash()
            budget["left"] -= 1
            return super().generate(requests)

    register_backend("flaky", Flaky)
    out = tmp_path / "run"
    with pytest.raises(Crash):
        evaluate("gsm8k", solver="flaky:m", limit=6, out=out)
    assert len(read_records(out)) == 3  # 2 calls per example: the 4th died in its solve stage
    with open(out / "records.jsonl", "a") as f:
        f.write('{"id": "gsm8k-test-3", "trunc')  # a crash mid-write
    budget["left"] = 100
    _, summary = evaluate("gsm8k", solver="flaky:m", limit=6, out=out)
    ids = [r["id"] for r in read_records(out)]
    assert ids == [f"gsm8k-test-{i}" for i in range(6)]
    assert summary["n"] == 6
    # the 4th example's decomposition was cached before the crash: only 2 + 2*2 new calls, i.e. budget went 100 -> 95
    assert budget["left"] == 95


def test_rerun_with_other_config_in_same_dir_is_refused(tmp_path):
    evaluate("gsm8k", solver="fake:m", limit=1, out=tmp_path / "run")
    with pytest.raises(ConfigMismatch, match="different config"):
        evaluate("gsm8k", solver="fake:m", limit=2, out=tmp_path / "run")


def test_summary_accounts_tokens_and_dollars_per_model(tmp_path):
    _, s = evaluate("gsm8k", solver="fake:s", decomposer="fake:d", limit=3, out=tmp_path / "run")
    assert s["by_model"]["fake:d"]["tokens_in"] == 300 and s["by_model"]["fake:s"]["tokens_out"] == 60
    assert s["by_stage"]["decompose"]["calls"] == 3
    assert s["tokens_in"] == 600
    # fake models have no price: shown as unpriced, never as $0
    assert s["dollars"] is None and s["big_model_dollars"] is None and s["unpriced"] == ["fake:d", "fake:s"]
    summary_file = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary_file["n"] == 3


def test_run_made_with_other_prompts_is_not_resumed(tmp_path, monkeypatch):
    evaluate("gsm8k", solver="fake:m", limit=1, out=tmp_path / "run")
    import divcon.pipeline.prompts as prompts

    monkeypatch.setattr(prompts, "NO_DECOMPOSITION", "Nothing to split.")
    with pytest.raises(ConfigMismatch, match="prompts"):
        evaluate("gsm8k", solver="fake:m", limit=1, out=tmp_path / "run")


def test_resume_ignores_a_setting_the_mode_never_reads(tmp_path):
    """A cot run dir whose config recorded every pipeline setting (as older divcon did, with solve_style 'short')
    resumes under today's default 'working': single-stage never reads it, its requests are the same."""
    out = tmp_path / "run"
    evaluate("gsm8k", solver="fake:m", pcfg=PipelineConfig(mode="cot"), limit=1, out=out)
    cfg = json.loads((out / "config.json").read_text())
    assert "solve_style" not in cfg["pipeline"] and cfg["pipeline"]["mode"] == "cot"
    cfg["pipeline"] |= {"solve_style": "short", "decompose_style": "plain", "max_rounds": 2}  # an older, full record
    (out / "config.json").write_text(json.dumps(cfg))
    _, summary = evaluate("gsm8k", solver="fake:m", pcfg=PipelineConfig(mode="cot"), limit=1, out=out)
    assert summary["n"] == 1


def test_resume_refuses_a_setting_the_mode_reads(tmp_path):
    out = tmp_path / "run"
    evaluate("gsm8k", solver="fake:m", pcfg=PipelineConfig(mode="cot"), limit=1, out=out)
    with pytest.raises(ConfigMismatch, match="pipeline"):  # the sampling temperature changes cot's requests
        evaluate("gsm8k", solver="fake:m", pcfg=PipelineConfig(mode="cot", temperature=0.7), limit=1, out=out)
    evaluate("gsm8k", solver="fake:m", pcfg=PipelineConfig(mode="two-stage"), limit=1, out=tmp_path / "ts")
    with pytest.raises(ConfigMismatch, match="pipeline"):  # two-stage reads solve_style
        evaluate("gsm8k", solver="fake:m", pcfg=PipelineConfig(mode="two-stage", solve_style="short"), limit=1,
                 out=tmp_path / "ts")
