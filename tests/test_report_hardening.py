"""Reports that travel (no machine paths), count the examples that could not be run, and never show an unpriced
model as $0. Runs are written by hand: no model is loaded."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import pytest

from divcon.cost import price_of
from divcon.experiments.grid import read_grid_json
from divcon.experiments.report import build_report

PRICED = "llamacpp:qwen2.5-1.5b"
SMALL = "llamacpp:smollm2-135m"
UNPRICED = "fake:x"


def _write_run(run_dir: Path, solver: str = PRICED, decomposer: str = SMALL, errors: int = 0) -> None:
    """Four GSM8K questions (em 1,0,1,1), two-stage; the last ``errors`` of them are error records as the runner
    writes them for an example it cannot run: an "error" reason, metrics all 0.0, no usage."""
    run_dir.mkdir(parents=True)
    cfg = {"task": "gsm8k", "split": "test", "limit": 4, "offset": 0, "shuffle_seed": None, "mode": "two-stage",
           "decomposer": decomposer, "solver": solver, "pipeline": {}}
    (run_dir / "config.json").write_text(json.dumps(cfg))
    lines = []
    for i, em in enumerate([1.0, 0.0, 1.0, 1.0]):
        rec: dict[str, Any] = {
            "id": f"q{i}", "question": "?", "golds": ["1"], "mode": "two-stage", "subquestions": ["a?"],
            "outputs": {}, "final_output": "", "truncated": False, "answer": "1", "answer_source": "marker",
            "metrics": {"em": em, "lenient": 1.0}, "wall_seconds": 0.5,
            "usage": [
                {"stage": "decompose", "model": decomposer, "tokens_in": 100, "tokens_out": 20, "seconds": 0.5,
                 "calls": 1, "cached": False},
                {"stage": "solve", "model": solver, "tokens_in": 200, "tokens_out": 50, "seconds": 1.5, "calls": 1,
                 "cached": False},
            ],
        }
        if i >= 4 - errors:
            rec.update(error="prompt of 9000 tokens exceeds the context window (4096)", usage=[], subquestions=[],
                       answer=None, answer_source="error", metrics={"em": 0.0, "lenient": 0.0})
        lines.append(json.dumps(rec))
    (run_dir / "records.jsonl").write_text("\n".join(lines) + "\n")


def _strings(x: Any) -> Iterator[str]:
    """Every string value (not key) anywhere in a JSON document."""
    if isinstance(x, str):
        yield x
    elif isinstance(x, dict):
        for v in x.values():
            yield from _strings(v)
    elif isinstance(x, list):
        for v in x:
            yield from _strings(v)


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Default prices; the call log (which pricing may consult for model identities) in tmp."""
    monkeypatch.delenv("DIVCON_PRICES", raising=False)
    monkeypatch.setenv("DIVCON_DB", str(tmp_path / "calls.sqlite"))
    monkeypatch.setenv("DIVCON_CACHE", str(tmp_path / "cache"))


def test_report_paths_are_relative_to_the_report_folder(tmp_path: Path) -> None:
    run, empty, out = tmp_path / "grid" / "gsm8k" / "T-S", tmp_path / "grid" / "gsm8k" / "empty", tmp_path / "rep"
    _write_run(run)
    empty.mkdir(parents=True)
    (empty / "config.json").write_text((run / "config.json").read_text())
    build_report([run, empty], out, "Paths")
    data = json.loads((out / "report.json").read_text())
    bad = [s for s in _strings(data) if s.startswith("/") or str(tmp_path) in s]
    assert bad == []
    row = data["tasks"][0]["rows"][0]
    assert row["run_dir"] == "../grid/gsm8k/T-S"
    assert (out / row["run_dir"]).resolve() == run.resolve()
    assert data["empty_runs"] == ["../grid/gsm8k/empty"]
    for name in ("report.md", "report.html"):
        assert str(tmp_path) not in (out / name).read_text()


def test_grid_json_run_dirs_are_relative_and_old_absolute_ones_still_read(tmp_path: Path) -> None:
    from divcon.experiments.grid import parse_grid, write_grid_json, CellStatus

    grid = parse_grid({"tasks": ["gsm8k"], "cells": [{"label": "T", "mode": "cot", "solver": PRICED}]})
    out = tmp_path / "g"
    write_grid_json(out, grid, [CellStatus("pending", 3)], None)
    raw = json.loads((out / "grid.json").read_text())
    assert raw["cells"][0]["run_dir"] == "gsm8k/T"
    assert read_grid_json(out)["cells"][0]["run_dir"] == str((out / "gsm8k" / "T").resolve())
    # a grid.json written before run dirs were relative
    raw["cells"][0]["run_dir"] = str((out / "gsm8k" / "T").resolve())
    (out / "grid.json").write_text(json.dumps(raw))
    assert read_grid_json(out)["cells"][0]["run_dir"] == str((out / "gsm8k" / "T").resolve())


def test_report_counts_error_records(tmp_path: Path) -> None:
    ok, bad = tmp_path / "ok", tmp_path / "bad"
    _write_run(ok)
    _write_run(bad, decomposer=PRICED, errors=2)
    data = build_report([ok, bad], tmp_path / "rep", "Errors")
    rows = data["tasks"][0]["rows"]
    assert [r["errors"] for r in rows] == [0, 2]
    assert json.loads((tmp_path / "rep" / "report.json").read_text())["tasks"][0]["rows"][1]["errors"] == 2
    md = (tmp_path / "rep" / "report.md").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| label | mode |"))
    cells = [c.strip() for c in header.strip("|").split("|")]
    col = cells.index("errors")
    main = [line for line in md.splitlines() if line.startswith(("| smollm2-135m/", "| qwen2.5-1.5b/"))][:2]
    assert [[c.strip() for c in line.strip("|").split("|")][col] for line in main] == ["0", "2"]
    assert "<th>errors</th>" in (tmp_path / "rep" / "report.html").read_text()


def test_unpriced_model_is_never_shown_as_zero_dollars(tmp_path: Path) -> None:
    assert price_of(UNPRICED).source == "unpriced"
    priced, unpriced = tmp_path / "priced", tmp_path / "unpriced"
    _write_run(priced)
    _write_run(unpriced, decomposer=UNPRICED)
    data = build_report([priced, unpriced], tmp_path / "rep", "Unpriced")
    t = data["tasks"][0]
    p_row, u_row = t["rows"]
    assert p_row["dollars"] > 0 and p_row["unpriced"] == []
    assert u_row["dollars"] is None and u_row["unpriced"] == [UNPRICED]
    assert u_row["by_model"][UNPRICED]["dollars"] is None
    # whichever model the report calls big, the unpriced one (ranked first) or qwen: never a made-up $0
    assert (u_row["big_dollars"] is None) == (data["big_model"] == UNPRICED)
    assert (1 in t["pareto"]) <= (u_row["big_dollars"] is not None)
    assert data["unpriced"] == [UNPRICED]
    md = (tmp_path / "rep" / "report.md").read_text()
    main = next(line for line in md.splitlines() if line.startswith("| x/qwen2.5-1.5b |"))
    assert main.rstrip(" |").split("|")[-3].strip() == "unpriced"  # total $ column
    by_model = next(line for line in md.splitlines() if line.startswith(f"| x/qwen2.5-1.5b | {UNPRICED} |"))
    assert by_model.rstrip(" |").split("|")[-1].strip() == "unpriced"
    assert "| 0 |" not in by_model
    assert json.loads((tmp_path / "rep" / "report.json").read_text())["tasks"][0]["rows"][1]["dollars"] is None


def test_unpriced_big_model_leaves_the_plot_and_front(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every model unpriced: the big model is too, so no row has a cost to plot; the report still builds, says
    why the rows are missing, and keeps nulls in report.json."""
    a, b = tmp_path / "a", tmp_path / "b"
    _write_run(a, solver=UNPRICED, decomposer=UNPRICED)
    _write_run(b, solver="fake:y", decomposer=UNPRICED)
    data = build_report([a, b], tmp_path / "rep", "All unpriced")
    t = data["tasks"][0]
    assert all(r["big_dollars"] is None and r["big_dollars_per_question"] is None for r in t["rows"])
    assert t["pareto"] == []
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "left out of the quality-vs-cost plot and the Pareto front" in md
    assert "x/x" in md.split("left out of the quality-vs-cost plot")[1].splitlines()[0]
    assert (tmp_path / "rep" / "quality_vs_cost.png").read_bytes()[:4] == b"\x89PNG"


def test_report_passes_the_summarys_unpriced_fields_through(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """summarize() gives None dollars and an "unpriced" list; the report must pass them through whatever price_of
    says today."""
    import divcon.experiments.report as report

    real = report.summarize

    def summarize(records: list[dict], cfg: dict, prices: Any = None, big: Any = None) -> dict:
        s = real(records, cfg, prices, big)
        if cfg["solver"] == SMALL:
            s["by_model"][SMALL]["dollars"] = None
            return {**s, "dollars": None, "big_model_dollars": None, "unpriced": [SMALL]}
        return {**s, "unpriced": []}

    monkeypatch.setattr(report, "summarize", summarize)
    p, u = tmp_path / "p", tmp_path / "u"
    _write_run(p)
    _write_run(u, solver=SMALL, decomposer=PRICED)
    data = build_report([p, u], tmp_path / "rep", "Summary's unpriced fields")
    rows = data["tasks"][0]["rows"]
    assert rows[1]["dollars"] is None and rows[1]["big_dollars"] is None and rows[1]["unpriced"] == [SMALL]
    assert data["tasks"][0]["pareto"] == [0]
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "unpriced" in next(line for line in md.splitlines() if line.startswith("| qwen2.5-1.5b/smollm2-135m |"))


def test_a_model_served_another_way_is_still_the_big_model(tmp_path: Path) -> None:
    """The teacher as ``...,slots=16`` (how it is served, not which model) counts as the same big model as the
    teacher plain: its tokens and dollars stay in the big-model columns, for old records as for new ones."""
    _write_run(tmp_path / "runs" / "plain")
    _write_run(tmp_path / "runs" / "slots", solver=f"{PRICED},slots=16", decomposer=f"{PRICED},engine=server")
    data = build_report([tmp_path / "runs" / "plain", tmp_path / "runs" / "slots"], tmp_path / "report", "t")
    rows = {r["run_dir"].split("/")[-1]: r for r in data["tasks"][0]["rows"]}
    assert rows["slots"]["big_tokens_in"] == 4 * 300 and rows["slots"]["other_tokens_in"] == 0
    assert list(rows["slots"]["by_model"]) == [PRICED]
    assert rows["plain"]["big_tokens_in"] == 4 * 200


def test_usage_is_recorded_under_the_accounting_name() -> None:
    from divcon.backends.base import Generation, accounting_name
    from divcon.pipeline.result import PipelineResult

    assert accounting_name("llamacpp:qwen2.5-1.5b,slots=16,engine=server") == PRICED
    assert accounting_name("qwen2.5-1.5b,lora=a/b,threads=2") == "llamacpp:qwen2.5-1.5b,lora=a/b"  # lora: which model
    r = PipelineResult(mode="two-stage")
    r.record("solve", Generation("x", 1, 1, 0.1, f"{PRICED},slots=16"))
    assert r.usage[0].model == PRICED
