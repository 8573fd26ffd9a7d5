"""Experiment grids, reports and their statistics, with a fake backend: no model is loaded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from divcon.backends import ChatRequest, Generation, ModelSpec, default_log, register_backend
from divcon.cost import load_table, price_of
from divcon.experiments.grid import (GridError, file_status, grid_baselines, parse_grid, read_grid_json, run_grid,
                                     short_name)
from divcon.experiments.report import build_report
from divcon.runner import StopWhen
from divcon.experiments.stats import bootstrap_ci, pareto_front
from tests.fakes import is_decompose_prompt

BIG = "gridfake:big,params_b=1.5"
SMALL = "gridfake:small,params_b=0.135"

CALLS: list[tuple[str, str]] = []  # (model spec, "decompose" | "solve"): every call that reached the fake model


class FakeBackend:
    """Canned answers: subquestions to decomposer prompts, a solution ending in 18 to solver prompts."""

    def __init__(self, spec: ModelSpec):
        self.spec = str(spec)

    def generate(self, requests: list[ChatRequest]) -> list[Generation]:
        out = []
        for r in requests:
            decompose = is_decompose_prompt(r)
            CALLS.append((self.spec, "decompose" if decompose else "solve"))
            text = "1. What is x?\n2. What is y?" if decompose else "x is 9, y is 9. The answer is 18."
            tokens_in = sum(len(c.split()) for _, c in r.messages)
            out.append(Generation(text, tokens_in, len(text.split()), 0.01, self.spec))
        return out



@pytest.fixture()
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Isolated call log, cache, prices and a three-question GSM8K test split; the working dir is tmp_path. The
    backend kind is this module's own, so other tests registering their 'fake' cannot swap it out."""
    register_backend("gridfake", FakeBackend)
    monkeypatch.setenv("DIVCON_DB", str(tmp_path / "calls.sqlite"))
    monkeypatch.setenv("DIVCON_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("DIVCON_PRICES", raising=False)
    data = tmp_path / "data"
    (data / "gsm8k").mkdir(parents=True)
    rows = [("A has 9 and B has 9. Total?", "18"), ("9 plus 9?", "18"), ("2 plus 3?", "5")]
    (data / "gsm8k" / "test.jsonl").write_text(
        "".join(json.dumps({"question": q, "answer": f"work\n#### {a}"}) + "\n" for q, a in rows))
    monkeypatch.setenv("DIVCON_DATA", str(data))
    monkeypatch.chdir(tmp_path)
    CALLS.clear()
    yield tmp_path


GRID_YAML = f"""
title: Fake grid
limit: 3
models: {{T: "{BIG}", S: "{SMALL}"}}
tasks: [gsm8k]
cells:
  - {{label: T/T, mode: two-stage, decomposer: T, solver: T}}
  - {{label: T/S, mode: two-stage, decomposer: T, solver: S}}
"""


def test_grid_expansion() -> None:
    grid = parse_grid(yaml.safe_load("""
limit: 30
split: null
pipeline: {max_subquestions: 3}
models: {T: "llamacpp:qwen2.5-1.5b", S: "llamacpp:smollm2-135m", SDR: "hf:runs/distill/sdr/adapter"}
tasks: [gsm8k, {drop: {limit: 20}}, {bamboogle: {split: eval, shuffle_seed: 7}}]
cells:
  - {label: T (single), mode: cot, solver: T}
  - {label: S/T, mode: two-stage, decomposer: S, solver: T}
  - {label: SD-R/T, decomposer: SDR, solver: T, tasks: [gsm8k], requires: runs/distill/sdr/adapter}
  - {mode: dynamic, solver: T}
"""))
    got = [(c.task, c.split, c.limit, c.shuffle_seed, c.mode, c.decomposer, c.solver, c.label, c.slug)
           for c in grid.cells]
    T, S = "llamacpp:qwen2.5-1.5b", "llamacpp:smollm2-135m"
    assert got == [
        ("gsm8k", None, 30, None, "cot", None, T, "T (single)", "T-single"),
        ("gsm8k", None, 30, None, "two-stage", S, T, "S/T", "S-T"),
        ("gsm8k", None, 30, None, "two-stage", "hf:runs/distill/sdr/adapter", T, "SD-R/T", "SD-R-T"),
        ("gsm8k", None, 30, None, "dynamic", T, T, "qwen2.5-1.5b/qwen2.5-1.5b (dynamic)",
         "qwen2.5-1.5b-qwen2.5-1.5b-dynamic"),
        ("drop", None, 20, None, "cot", None, T, "T (single)", "T-single"),
        ("drop", None, 20, None, "two-stage", S, T, "S/T", "S-T"),
        ("drop", None, 20, None, "dynamic", T, T, "qwen2.5-1.5b/qwen2.5-1.5b (dynamic)",
         "qwen2.5-1.5b-qwen2.5-1.5b-dynamic"),
        ("bamboogle", "eval", 30, 7, "cot", None, T, "T (single)", "T-single"),
        ("bamboogle", "eval", 30, 7, "two-stage", S, T, "S/T", "S-T"),
        ("bamboogle", "eval", 30, 7, "dynamic", T, T, "qwen2.5-1.5b/qwen2.5-1.5b (dynamic)",
         "qwen2.5-1.5b-qwen2.5-1.5b-dynamic"),
    ]
    assert grid.cells[2].requires == ("runs/distill/sdr/adapter",)
    assert all(c.pipeline_config().max_subquestions == 3 for c in grid.cells)


@pytest.mark.parametrize("bad", [
    "tasks: [gsm8k]\ncells: [{label: x, mode: nope, solver: T}]",
    "tasks: [gsm8k]\ncells: [{label: x, mode: cot, solver: T, decomposer: T}]",
    "tasks: [gsm8k]\ncells: [{label: x, solver: T, typo: 1}]",
    "tasks: [gsm8k]\ncells: [{label: a/b, solver: T}, {label: a b, solver: S}]",
    "tasks: [gsm8k]\ncells: []",
    # decompositions: another two-stage cell of the same task, with the same decomposer, that makes its own
    "tasks: [gsm8k]\ncells: [{label: T/S, decomposer: T, solver: S, decompositions: T/T}]",
    "tasks: [gsm8k]\ncells: [{label: T/T, solver: T}, {label: T/S, decomposer: T, solver: S, decompositions: T/S}]",
    "tasks: [gsm8k]\ncells: [{label: T/T, solver: T}, {label: S/S, decomposer: S, solver: S, decompositions: T/T}]",
    "tasks: [gsm8k]\ncells: [{label: T, mode: cot, solver: T}, {label: T/S, decomposer: T, solver: S, "
    "decompositions: T}]",
    "tasks: [gsm8k]\ncells: [{label: T/T, solver: T}, {label: T/S, mode: dynamic, decomposer: T, solver: S, "
    "decompositions: T/T}]",
    "tasks: [gsm8k, svamp]\ncells: [{label: T/T, solver: T, tasks: [gsm8k]}, {label: T/S, decomposer: T, solver: S, "
    "decompositions: T/T}]",
])
def test_grid_rejects_malformed(bad: str) -> None:
    with pytest.raises(GridError):
        parse_grid(yaml.safe_load(bad))


def test_shared_decomposer_stage_computed_once(env: Path) -> None:
    grid = parse_grid(yaml.safe_load(GRID_YAML))
    out = env / "grid"
    statuses = run_grid(grid, out, [file_status(c, out) for c in grid.cells])
    assert [s.status for s in statuses] == ["done", "done"]
    # the fake model saw each decomposer prompt once, although both cells decompose every question with T
    assert CALLS.count((BIG, "decompose")) == 3
    assert CALLS.count((BIG, "solve")) == 3 and CALLS.count((SMALL, "solve")) == 3
    db = default_log().db
    assert db.execute("SELECT COUNT(*) FROM calls WHERE model=?", (BIG,)).fetchone()[0] == 6
    assert db.execute("SELECT SUM(hits) FROM calls WHERE model=?", (BIG,)).fetchone()[0] == 3
    # the T/S cell still accounts for the decomposer's tokens, replayed from the cache
    records = [json.loads(line) for line in (out / "gsm8k" / "T-S" / "records.jsonl").read_text().splitlines()]
    stages = {(u["stage"], u["model"], u["cached"]) for r in records for u in r["usage"]}
    assert stages == {("decompose", BIG, True), ("solve", SMALL, False)}
    cells = read_grid_json(out)["cells"]
    assert [(c["label"], c["status"], c["n"], c["done"]) for c in cells] == [("T/T", "done", 3, 3),
                                                                           ("T/S", "done", 3, 3)]
    # a re-run resumes: nothing left to compute
    CALLS.clear()
    run_grid(grid, out, [file_status(c, out) for c in grid.cells])
    assert CALLS == []


BORROW_YAML = GRID_YAML.replace("solver: S}", "solver: S, decompositions: T/T}")


def records_of(run_dir: Path) -> dict[str, dict]:
    return {r["id"]: r for r in map(json.loads, (run_dir / "records.jsonl").read_text().splitlines())}


def test_a_cell_borrows_its_decompositions_from_another_cells_run_files(env: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """T/S takes T/T's subquestions from T/T's records, also on a machine whose call log never saw them (a later
    session), and still accounts for the decomposer's tokens, as a cache hit; a question T/T has not answered yet is
    decomposed afresh."""
    grid = parse_grid(yaml.safe_load(BORROW_YAML))
    out = env / "grid"
    statuses = [file_status(c, out) for c in grid.cells]
    run_grid(grid, out, statuses, only=lambda c: c.label == "T/T", stop=StopWhen(max_new=2), concurrency=1)
    monkeypatch.setenv("DIVCON_DB", str(env / "another-machine.sqlite"))  # an empty call log
    CALLS.clear()
    run_grid(grid, out, statuses, only=lambda c: c.label == "T/S")
    assert CALLS.count((BIG, "decompose")) == 1  # only the question T/T had not reached
    assert CALLS.count((SMALL, "solve")) == 3
    source, borrower = records_of(out / "gsm8k" / "T-T"), records_of(out / "gsm8k" / "T-S")
    assert len(source) == 2 and len(borrower) == 3
    for qid, r in source.items():
        assert borrower[qid]["outputs"]["decompose"] == r["outputs"]["decompose"]
        assert borrower[qid]["subquestions"] == r["subquestions"]
        mine = next(u for u in borrower[qid]["usage"] if u["stage"] == "decompose")
        theirs = next(u for u in r["usage"] if u["stage"] == "decompose")
        assert (mine["tokens_in"], mine["tokens_out"], mine["model"], mine["cached"]) == (
            theirs["tokens_in"], theirs["tokens_out"], BIG, True)
    (fresh,) = set(borrower) - set(source)
    assert not next(u for u in borrower[fresh]["usage"] if u["stage"] == "decompose")["cached"]


def test_borrowing_decompositions_made_with_other_settings_is_refused(env: Path) -> None:
    """A source whose decomposer request differs (here fewer subquestions allowed) fails the borrowing cell with the
    reason, instead of handing its solver subquestions the cell's own settings would not have produced."""
    grid = parse_grid(yaml.safe_load(BORROW_YAML.replace(
        "{label: T/T, mode: two-stage, decomposer: T, solver: T}",
        "{label: T/T, mode: two-stage, decomposer: T, solver: T, pipeline: {max_subquestions: 2}}")))
    out = env / "grid"
    statuses = run_grid(grid, out, [file_status(c, out) for c in grid.cells])
    assert [s.status for s in statuses] == ["done", "failed"]
    assert "BorrowError" in statuses[1].reason and "max_subquestions 2 is not 4" in statuses[1].reason
    assert not (out / "gsm8k" / "T-S" / "records.jsonl").exists()


def test_grid_stops_cleanly_and_resumes(env: Path) -> None:
    grid = parse_grid(yaml.safe_load(GRID_YAML))
    out = env / "grid"
    # a clock that ticks once per model call: the time box ends after the first cell's second question (2 calls each)
    stop = StopWhen(deadline=len(CALLS) + 4, clock=lambda: len(CALLS))
    statuses = run_grid(grid, out, [file_status(c, out) for c in grid.cells], stop=stop, concurrency=1)
    assert [(s.status, s.done) for s in statuses] == [("partial", 2), ("pending", 0)]
    assert [(c["status"], c["done"]) for c in read_grid_json(out)["cells"]] == [("partial", 2), ("pending", 0)]
    statuses = run_grid(grid, out, [file_status(c, out) for c in grid.cells])
    assert [(s.status, s.done) for s in statuses] == [("done", 3), ("done", 3)]
    assert CALLS.count((BIG, "decompose")) == 3  # the resumed cell did not redo its first two questions


def test_cli_experiment_and_report(env: Path) -> None:
    from divcon.cli import app

    cfg = env / "grid.yaml"
    cfg.write_text(GRID_YAML + "  - {label: SD/T, decomposer: T, solver: T, requires: runs/distill/none/adapter}\n")
    runner = CliRunner()
    res = runner.invoke(app, ["experiment", str(cfg), "--out", "g", "--dry-run"])
    assert res.exit_code == 0 and "pending" in res.output and not (env / "g").exists()
    res = runner.invoke(app, ["experiment", str(cfg), "--out", "g", "--only-task", "drop"])
    assert res.exit_code == 2 and "no cell runs on task 'drop'" in res.output
    res = runner.invoke(app, ["experiment", str(cfg), "--out", "g", "--only-label", "T/X"])
    assert res.exit_code == 2 and "no cell is labelled 'T/X'" in res.output
    res = runner.invoke(app, ["experiment", str(cfg), "--out", "g", "--only-label", "T/S"])
    assert res.exit_code == 0, res.output
    statuses = {c["label"]: c["status"] for c in read_grid_json(env / "g")["cells"]}
    assert statuses["T/S"] == "done" and statuses["T/T"] == "pending"  # only the chosen row ran
    res = runner.invoke(app, ["experiment", str(cfg), "--out", "g"])
    assert res.exit_code == 0, res.output
    statuses = {c["label"]: (c["status"], c["reason"]) for c in read_grid_json(env / "g")["cells"]}
    assert statuses["SD/T"] == ("skipped", "missing runs/distill/none/adapter")
    assert not (env / "g" / "gsm8k" / "SD-T").exists()
    res = runner.invoke(app, ["report", "g", "--out", "rep"])
    assert res.exit_code == 0, res.output
    data = json.loads((env / "rep" / "report.json").read_text())
    assert data["title"] == "Fake grid"  # from the config, through grid.json
    rows = data["tasks"][0]["rows"]
    assert [r["label"] for r in rows] == ["T/T", "T/S"]  # labels from grid.json, in grid order
    assert [r["metric"] for r in rows] == pytest.approx([2 / 3, 2 / 3])
    assert rows[1]["big_tokens_in"] == rows[0]["by_model"][BIG]["tokens_in"] - rows[0]["by_stage"]["solve"]["tokens_in"]
    html = (env / "rep" / "report.html").read_text()
    assert "data:image/png;base64," in html and "<style>" in html
    assert (env / "rep" / "quality_vs_cost.png").read_bytes()[:4] == b"\x89PNG"


def test_cli_experiment_round_robin(env: Path) -> None:
    """--chunk raises every cell by that many questions per round: the solver calls alternate between the cells in
    chunks, where the default runs one cell to the end before the next; grid.json says both are done."""
    from divcon.cli import app

    cfg = env / "grid.yaml"
    cfg.write_text(GRID_YAML)
    res = CliRunner().invoke(app, ["experiment", str(cfg), "--out", "g", "--chunk", "2", "--concurrency", "1"])
    assert res.exit_code == 0, res.output
    assert [spec for spec, stage in CALLS if stage == "solve"] == [BIG, BIG, SMALL, SMALL, BIG, SMALL]
    assert [(c["status"], c["done"]) for c in read_grid_json(env / "g")["cells"]] == [("done", 3), ("done", 3)]


def test_cli_experiment_up_to_stages_a_round_robin(env: Path) -> None:
    """--up-to raises the cells only that far: both stop at 2 of 3 and the run exits 0 (the stage is complete, not
    cut short); a run without it goes on to the config's limit. Without --chunk it is refused."""
    from divcon.cli import app

    cfg = env / "grid.yaml"
    cfg.write_text(GRID_YAML)
    res = CliRunner().invoke(app, ["experiment", str(cfg), "--out", "g", "--chunk", "1", "--up-to", "2",
                                   "--concurrency", "1", "--stop-after", "60"])
    assert res.exit_code == 0, res.output
    assert [(c["status"], c["done"]) for c in read_grid_json(env / "g")["cells"]] == [("partial", 2), ("partial", 2)]
    assert len([1 for _, stage in CALLS if stage == "solve"]) == 4
    res = CliRunner().invoke(app, ["experiment", str(cfg), "--out", "g", "--chunk", "1", "--stop-after", "60"])
    assert res.exit_code == 0, res.output
    assert [(c["status"], c["done"]) for c in read_grid_json(env / "g")["cells"]] == [("done", 3), ("done", 3)]
    res = CliRunner().invoke(app, ["experiment", str(cfg), "--out", "g", "--up-to", "2"])
    assert res.exit_code == 2 and "--chunk" in res.output


def test_cli_experiment_time_box_exit_status(env: Path) -> None:
    """A time box that leaves cells unfinished exits 3 (a script resumes), the run that finishes them exits 0."""
    from divcon.cli import app

    cfg = env / "grid.yaml"
    cfg.write_text(GRID_YAML)
    res = CliRunner().invoke(app, ["experiment", str(cfg), "--out", "g", "--stop-after", "0"])
    assert res.exit_code == 3, res.output
    assert "2 cell(s) unfinished" in res.output
    assert {c["status"] for c in read_grid_json(env / "g")["cells"]} == {"pending"}
    res = CliRunner().invoke(app, ["experiment", str(cfg), "--out", "g", "--stop-after", "60"])
    assert res.exit_code == 0, res.output
    assert {c["status"] for c in read_grid_json(env / "g")["cells"]} == {"done"}


def _fixture_run(run_dir: Path) -> None:
    """A run written by hand: 4 GSM8K questions, em 1,0,1,1; decomposer smollm2, solver qwen2.5-1.5b."""
    run_dir.mkdir(parents=True)
    cfg = {"task": "gsm8k", "split": "test", "limit": 4, "offset": 0, "shuffle_seed": None, "mode": "two-stage",
           "decomposer": "llamacpp:smollm2-135m", "solver": "llamacpp:qwen2.5-1.5b", "pipeline": {}}
    (run_dir / "config.json").write_text(json.dumps(cfg))
    lines = []
    for i, em in enumerate([1.0, 0.0, 1.0, 1.0]):
        lines.append(json.dumps({
            "id": f"q{i}", "question": "?", "golds": ["1"], "mode": "two-stage",
            "subquestions": [] if i == 1 else ["a?", "b?"],
            "outputs": {}, "final_output": "", "truncated": False, "answer": "1", "answer_source": "marker",
            "metrics": {"em": em, "lenient": 1.0}, "wall_seconds": 0.5,
            "usage": [
                {"stage": "decompose", "model": "llamacpp:smollm2-135m", "tokens_in": 100, "tokens_out": 20,
                 "seconds": 0.5, "calls": 1, "cached": False},
                {"stage": "solve", "model": "llamacpp:qwen2.5-1.5b", "tokens_in": 200 + i, "tokens_out": 50,
                 "seconds": 1.5, "calls": 1, "cached": False},
            ],
        }))
    (run_dir / "records.jsonl").write_text("\n".join(lines) + "\n")


def test_report_numbers_match_hand_computation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DIVCON_PRICES", raising=False)
    run = tmp_path / "run"
    _fixture_run(run)
    data = build_report([run], tmp_path / "rep", "Fixture")
    row = data["tasks"][0]["rows"][0]
    ref = load_table()["reference"]
    per_k_in, per_k_out = ref["in_per_1k"] / ref["params_b"], ref["out_per_1k"] / ref["params_b"]
    big_in, big_out = 200 + 201 + 202 + 203, 4 * 50
    big_dollars = (big_in / 1000 * per_k_in + big_out / 1000 * per_k_out) * 1.5
    small_dollars = (400 / 1000 * per_k_in + 80 / 1000 * per_k_out) * 0.135
    assert data["big_model"] == "llamacpp:qwen2.5-1.5b"
    assert row["label"] == "smollm2-135m/qwen2.5-1.5b"
    assert row["n"] == 4 and row["metric"] == pytest.approx(0.75)
    assert row["extra_metrics"] == {"lenient": 1.0}
    assert (row["big_tokens_in"], row["big_tokens_out"]) == (big_in, big_out)
    assert (row["other_tokens_in"], row["other_tokens_out"]) == (400, 80)
    assert row["big_dollars"] == pytest.approx(big_dollars)
    assert row["dollars"] == pytest.approx(big_dollars + small_dollars)
    assert price_of("llamacpp:qwen2.5-1.5b").dollars(big_in, big_out) == pytest.approx(big_dollars)
    assert row["model_seconds"] == pytest.approx(8.0) and row["model_seconds_per_question"] == pytest.approx(2.0)
    assert row["wall_seconds_per_question"] == pytest.approx(0.5)
    # per correct answer (3 of 4 right): the big model's tokens, and every model's
    assert row["big_tokens_per_correct"] == pytest.approx((big_in + big_out) / 3)
    assert row["tokens_per_correct"] == pytest.approx((big_in + big_out + 400 + 80) / 3)
    lo, hi = row["ci95"]
    assert lo <= 0.75 <= hi
    md = (tmp_path / "rep" / "report.md").read_text()
    assert row["no_subquestions"] == 1 and row["mean_subquestions"] == pytest.approx(1.5)
    assert "Decompositions" in md and "| 1.50 | 1 of 4 |" in md
    assert "0.750 [" in md and "Data splits" in md and "passage-hashed" in md and "extra (not primary)" in md
    assert "Cost per answer" in md and f"| {(big_in + big_out) / 3:.0f} |" in md


def test_static_vs_dynamic_pairs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DIVCON_PRICES", raising=False)
    static, dynamic = tmp_path / "static", tmp_path / "dynamic"
    _fixture_run(static)
    _fixture_run(dynamic)
    cfg = json.loads((dynamic / "config.json").read_text())
    (dynamic / "config.json").write_text(json.dumps({**cfg, "mode": "dynamic"}))
    recs = [json.loads(x) for x in (dynamic / "records.jsonl").read_text().splitlines()]
    for r in recs:
        for u in r["usage"]:
            u["tokens_in"] *= 2
            u["tokens_out"] *= 2
    (dynamic / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    pairs = build_report([static, dynamic], tmp_path / "rep", "SvD")["tasks"][0]["static_vs_dynamic"]
    assert len(pairs) == 1 and pairs[0]["tokens_ratio"] == pytest.approx(2.0)
    # Table 6's other columns: 2 calls per question each; tokens per correct answer (3 of 4 right) double too
    assert pairs[0]["static_calls_per_question"] == pairs[0]["dynamic_calls_per_question"] == 2.0
    static_tokens = sum(100 + 20 + 200 + i + 50 for i in range(4))
    assert pairs[0]["static_tokens_per_correct"] == pytest.approx(static_tokens / 3)
    assert pairs[0]["dynamic_tokens_per_correct"] == pytest.approx(2 * static_tokens / 3)
    assert "tokens per correct (em)" in (tmp_path / "rep" / "report.md").read_text()


def test_bootstrap_ci() -> None:
    assert bootstrap_ci([1.0] * 30) == (1.0, 1.0)
    lo, hi = bootstrap_ci([0.0, 1.0] * 50)
    assert lo < 0.5 < hi and 0.35 <= lo and hi <= 0.65
    assert bootstrap_ci([0.0, 1.0] * 50, seed=3) == bootstrap_ci([0.0, 1.0] * 50, seed=3)


def test_pareto_front() -> None:
    pts = [(1.0, 0.5), (2.0, 0.4), (2.0, 0.7), (3.0, 0.7), (0.5, 0.2), (4.0, 0.9)]
    # (2, .4) is beaten by (1, .5); (3, .7) by (2, .7)
    assert pareto_front(pts) == [4, 0, 2, 5]
    assert pareto_front([(1.0, 1.0), (1.0, 1.0)]) == [0, 1]


def test_plot_labels_of_close_points_do_not_overlap() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from divcon.experiments.report import _label_lifts

    fig, ax = plt.subplots(figsize=(5, 4))
    ax.set_xlim(0, 10)
    ax.set_ylim(0, 1)
    xs, ys = [0.0, 0.0, 0.05, 9.0], [0.2, 0.2, 0.21, 0.9]
    lifts = _label_lifts(ax, xs, ys, ["S/S", "S (single)", "S/T", "T/T"])
    plt.close(fig)
    assert lifts[0] == 0.0 and lifts[3] == 0.0  # nothing in the way: the label sits at its point
    assert len(set(lifts[:3])) == 3  # three labels at (nearly) one point: three different heights


def test_paired_difference_interval_resamples_pairs():
    from divcon.experiments.stats import paired_diff_ci

    a = [1, 1, 1, 1, 0, 0, 1, 1, 0, 1] * 10
    b = [1, 1, 0, 1, 0, 0, 1, 1, 0, 1] * 10  # a is right on one question more in each block of ten
    diff, lo, hi = paired_diff_ci(a, b)
    assert diff == pytest.approx(0.1)
    assert 0.03 <= lo <= 0.1 <= hi <= 0.17
    assert paired_diff_ci(a, a) == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="length"):
        paired_diff_ci([1], [1, 0])


def test_grid_baseline_must_name_a_cell():
    cfg = {"tasks": ["gsm8k"], "cells": [{"label": "A", "mode": "cot", "solver": "fake:x"}]}
    assert parse_grid({**cfg, "baseline": "A"}).baselines == ("A",)
    assert parse_grid({**cfg, "baseline": ["A"]}).baselines == ("A",)
    with pytest.raises(GridError, match="baseline 'B'"):
        parse_grid({**cfg, "baseline": "B"})
    with pytest.raises(GridError, match="baseline 'B'"):
        parse_grid({**cfg, "baseline": ["A", "B"]})


def test_report_pairs_each_row_with_each_baseline_on_shared_questions(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DIVCON_PRICES", raising=False)
    base, other = tmp_path / "base", tmp_path / "other"
    _fixture_run(base)  # em 1, 0, 1, 1 on q0..q3
    _fixture_run(other)
    recs = [json.loads(x) for x in (other / "records.jsonl").read_text().splitlines()]
    recs[1]["metrics"]["em"] = 1.0  # right where the baseline was wrong
    recs[2]["metrics"]["em"] = 0.0  # and wrong where it was right ...
    recs[3]["metrics"]["em"] = 0.0
    (other / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs[1:]))  # ... q0 never run
    labels = {"cells": [{"run_dir": "base", "label": "B"}, {"run_dir": "other", "label": "O"}]}
    (tmp_path / "grid.json").write_text(json.dumps({"title": "t", **labels}))
    data = build_report([base, other], tmp_path / "rep", "Paired", baselines=["B", "O", "absent"])
    task = data["tasks"][0]
    assert task["baselines"] == ["B", "O"]  # a label with no row in the task gets no column
    rows = {r["label"]: r for r in task["rows"]}
    vs_b = rows["O"]["paired"][0]
    assert vs_b["label"] == "B" and vs_b["n"] == 3 and vs_b["diff"] == pytest.approx((1 - 2) / 3)  # +1, -1, -1
    assert vs_b["ci95"][0] <= vs_b["diff"] <= vs_b["ci95"][1]
    assert rows["B"]["paired"][0] is None and rows["O"]["paired"][1] is None  # a row is no pair of itself
    assert rows["B"]["paired"][1]["diff"] == pytest.approx(-vs_b["diff"])  # the same pairs, the other way round
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "vs B, paired [95% CI] | vs O, paired [95% CI]" in md and "| (baseline) | +0.333 [" in md
    assert "| -0.333 [" in md and "(n=3)" in md
    with pytest.raises(TypeError, match="list of row labels"):
        build_report([base, other], tmp_path / "rep", "Paired", baselines="B")


def test_report_reads_the_baselines_of_new_and_old_grid_files() -> None:
    assert grid_baselines({"baselines": ["T/T", "T (single)"], "baseline": "x"}) == ["T/T", "T (single)"]
    assert grid_baselines({"baseline": "T (single)"}) == ["T (single)"]  # a grid.json written before the list
    assert grid_baselines({"cells": []}) == []


def test_static_and_dynamic_rows_pair_only_with_the_same_demonstrations(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DIVCON_PRICES", raising=False)
    runs = {}
    for name, mode, shots in [("s0", "two-stage", 0), ("s4", "two-stage", 4), ("d4", "dynamic", 4)]:
        runs[name] = tmp_path / name
        _fixture_run(runs[name])
        cfg = json.loads((runs[name] / "config.json").read_text())
        cfg.update(mode=mode, pipeline={"shots": shots, "decompose_shots": shots})
        (runs[name] / "config.json").write_text(json.dumps(cfg))
    (tmp_path / "grid.json").write_text(json.dumps({"cells": [{"run_dir": n, "label": n} for n in runs]}))
    pairs = build_report(list(runs.values()), tmp_path / "rep", "SvD")["tasks"][0]["static_vs_dynamic"]
    # s0 (no demonstrations) is not compared with the 4-shot dynamic row
    assert [(p["static_label"], p["dynamic_label"]) for p in pairs] == [("s4", "d4")]
    assert "| s4 | d4 |" in (tmp_path / "rep" / "report.md").read_text()


def test_a_student_is_named_by_its_adapter_folder_on_either_engine() -> None:
    assert short_name("llamacpp:qwen2.5-1.5b,slots=16") == "qwen2.5-1.5b"
    assert short_name("llamacpp:smollm2-135m,slots=16,lora=reports/bench_distill/students/se-t") == "se-t"
    assert short_name("hf:smollm2-135m,adapter=runs/distill/sd-r/adapter") == "sd-r"
