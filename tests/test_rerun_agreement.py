"""benchmarks/rerun_agreement.py: runs with the same settings are paired as reruns (and only those), and their
agreement is counted on the questions both answered."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.benchmark_module import loaded_benchmark


@pytest.fixture(scope="module")
def ra():
    with loaded_benchmark("rerun_agreement") as mod:
        yield mod


def write_run(d: Path, outputs: dict[str, tuple[str, str, float]], limit: int, solve_tokens: int = 512,
              slots: int = 16) -> None:
    """A run dir whose records are {id: (decomposition, final output, em)}."""
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps({
        "task": "gsm8k", "split": "test", "limit": limit, "offset": 0, "mode": "two-stage",
        "decomposer": f"llamacpp:qwen2.5-1.5b,slots={slots}", "solver": f"llamacpp:qwen2.5-1.5b,slots={slots}",
        "models": {"solver": "abc", "decomposer": "abc"}, "pipeline": {"solve_tokens": solve_tokens},
        "prompts": "p1", "divcon_version": "0.1.0"}))
    (d / "records.jsonl").write_text("".join(
        json.dumps({"id": i, "outputs": {"decompose": dec, "solve": out}, "final_output": out,
                    "metrics": {"em": em}}) + "\n" for i, (dec, out, em) in outputs.items()))


def test_reruns_are_paired_and_counted(ra, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_run(tmp_path / "reports/a/runs/T-T", {"q1": ("d1", "o1", 1.0), "q2": ("d2", "o2", 1.0),
                                                "q3": ("d3", "o3", 0.0), "q4": ("d4", "o4", 1.0)}, limit=300)
    # the same settings asked for another size, on another number of slots: a rerun; q4 is not in it
    write_run(tmp_path / "reports/b/runs/T-T", {"q1": ("d1", "o1", 1.0), "q2": ("d2x", "o2x", 0.0),
                                                "q3": ("d3", "o3y", 0.0)}, limit=48, slots=8)
    # another setting: not a rerun of either
    write_run(tmp_path / "reports/c/runs/T-T", {"q1": ("d1", "o1", 0.0)}, limit=48, solve_tokens=256)
    pairs = ra.rerun_pairs(Path("reports"))
    assert len(pairs) == 1
    p = pairs[0]
    assert (p["n"], p["same_decomposition"], p["same_final_output"], p["score_changed"]) == (3, 2, 1, 1)
    assert p["a_mean"] == pytest.approx(2 / 3) and p["b_mean"] == pytest.approx(1 / 3)
    assert p["diff"] == pytest.approx(1 / 3)
    page = ra.render(pairs)
    assert "`reports/a/runs/T-T`" in page and str(tmp_path) not in page  # committed pages name no machine path
    assert "| 3 | 2 (67%) | 1 (33%) | 1 (33%) |" in page


def test_no_reruns_says_so(ra, tmp_path):
    write_run(tmp_path / "runs/T-T", {"q1": ("d", "o", 1.0)}, limit=10)
    assert ra.rerun_pairs(tmp_path) == []
    assert "No two runs with the same settings" in ra.render([])
