"""The paper's claims, each tested on committed run files, with a verdict that follows from a paired interval.

A claims file (YAML, e.g. configs/claims.yaml) is data: each claim states what the paper says, and lists the tests
that check it here, each naming two run dirs (``a`` and ``b``) and a kind:

- ``at_least``: a scores no worse than b, up to ``margin`` (non-inferiority). Holds when the paired interval of
  a - b lies above -margin; does not hold when it lies below 0 and reaches past -margin; undecided otherwise.
- ``below``: a scores clearly below b (the paper's "a distilled solver loses a lot"). Holds when the interval lies
  below 0; does not hold when it lies above -margin; undecided otherwise.
- ``fewer_tokens``: a spends fewer tokens per question than b. The measure is b's tokens over a's on the same
  questions (a ratio with a bootstrap interval); holds when the interval lies above 1, does not hold below 1.
- ``fewer_tokens_per_correct``: the same for tokens per correct answer (b's tokens over its summed score, over a's),
  the cost that matters when the two differ in quality too (issue 12: a router must pay the teacher less per right
  answer than the teacher alone).
A tokens test may name a ``model`` (its accounting name, e.g. ``llamacpp:qwen2.5-1.5b``): then only that model's
tokens count, the big model's bill rather than every model's.

Every comparison is paired on the questions both runs answered, resampling questions (2000 resamples, seeded), so
the page is reproducible and regenerated from the run files, never typed in. A test whose run dirs do not exist yet
is shown as "not measured yet": a claim is never dropped from the page because its evidence is missing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from divcon.experiments.report import Run, grid_labels, load_run
from divcon.experiments.stats import paired_diff_ci, paired_per_success_ratio_ci, paired_ratio_ci
from divcon.pipeline import PipelineConfig, prompts_fingerprint
from divcon.tasks import get_task

KINDS = ("at_least", "below", "fewer_tokens", "fewer_tokens_per_correct")
TOKEN_KINDS = ("fewer_tokens", "fewer_tokens_per_correct")
HOLDS, FAILS, UNDECIDED, MISSING = "holds", "does not hold", "undecided at this n", "not measured yet"


@dataclass
class Comparison:
    """One comparison of two runs (see the module docstring for the kinds)."""

    kind: str
    a: str  # run dir, relative to the claims file's ``root``
    b: str
    what: str = ""  # e.g. "GSM8K test, bench_distill"
    margin: float = 0.03
    model: str | None = None  # tokens kinds: count only this model's tokens (its accounting name)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown test kind {self.kind!r}; kinds: {', '.join(KINDS)}")
        if self.model and self.kind not in TOKEN_KINDS:
            raise ValueError(f"'model' only applies to the token kinds ({', '.join(TOKEN_KINDS)}), not {self.kind!r}")


@dataclass
class Claim:
    claim: str  # what the paper says, in a sentence
    paper: str = ""  # its figures, for the reader
    tests: list[Comparison] = field(default_factory=list)


def load_claims(path: Path) -> tuple[str, list[Claim]]:
    """(title, claims) of a claims file."""
    raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    claims = [Claim(c["claim"], c.get("paper", ""), [Comparison(**t) for t in c.get("tests") or []])
              for c in raw.get("claims") or []]
    return raw.get("title", "The paper's claims, tested here"), claims


def prompts_status(run: Run) -> str:
    """"current" when the run's prompts fingerprint is what today's prompts give for its settings, else "older
    (<fingerprint>)": a verdict from runs made with prompts since replaced must say so."""
    recorded = run.config.get("prompts")
    known = {f.name for f in fields(PipelineConfig)}
    try:
        cfg = PipelineConfig(**{k: v for k, v in (run.config.get("pipeline") or {}).items() if k in known})
        current = prompts_fingerprint(cfg, get_task(run.config["task"]).family)
    except (ValueError, TypeError):  # a setting value today's divcon rejects: made with other prompts
        current = None
    return "current" if recorded == current else f"older ({recorded})"


def _label(run: Run) -> str:
    """The cell label from the run's grid.json, else its folder name (a derived label can name two runs alike)."""
    return grid_labels(run.run_dir).get(run.run_dir) or run.run_dir.name


def _tokens(rec: dict, model: str | None = None) -> float:
    return float(sum(u["tokens_in"] + u["tokens_out"] for u in rec.get("usage") or []
                     if model is None or u.get("model") == model))


def verdict(kind: str, lo: float, hi: float, margin: float) -> str:
    """The verdict a paired interval supports (module docstring)."""
    if kind == "at_least":
        return HOLDS if lo > -margin else FAILS if hi < 0 else UNDECIDED
    if kind == "below":
        return HOLDS if hi < 0 else FAILS if lo > -margin else UNDECIDED
    return HOLDS if lo > 1 else FAILS if hi < 1 else UNDECIDED  # the token kinds: a ratio, b's cost over a's


def evaluate_test(test: Comparison, root: Path) -> dict[str, Any]:
    """One test's numbers and verdict; ``verdict`` is "not measured yet" while a run dir has no records."""
    a_dir, b_dir = root / test.a, root / test.b
    out: dict[str, Any] = {"kind": test.kind, "a": test.a, "b": test.b, "what": test.what, "margin": test.margin,
                           "model": test.model}
    if not all((d / "records.jsonl").exists() for d in (a_dir, b_dir)):
        return out | {"verdict": MISSING, "n": 0}
    ra, rb = load_run(a_dir), load_run(b_dir)
    primary = get_task(ra.config["task"]).primary
    metric = "tokens" if test.kind in TOKEN_KINDS else primary
    tokens = [{r["id"]: _tokens(r, test.model) for r in run.records} for run in (ra, rb)]
    scores = [{r["id"]: r["metrics"].get(primary, 0.0) for r in run.records} for run in (ra, rb)]
    ids = sorted(set(scores[0]) & set(scores[1]))
    out |= {"a_label": _label(ra), "b_label": _label(rb), "n": len(ids), "metric": metric,
            "prompts": sorted({prompts_status(run) for run in (ra, rb)})}
    if not ids:
        return out | {"verdict": MISSING}
    (ta, tb), (sa, sb) = ([[d[i] for i in ids] for d in pair] for pair in (tokens, scores))
    if test.kind == "fewer_tokens_per_correct":
        est, lo, hi = paired_per_success_ratio_ci(ta, sa, tb, sb)
        a_mean, b_mean = (sum(t) / sum(s) if sum(s) else float("nan") for t, s in ((ta, sa), (tb, sb)))
    else:
        a, b = (ta, tb) if metric == "tokens" else (sa, sb)
        est, lo, hi = paired_ratio_ci(b, a) if metric == "tokens" else paired_diff_ci(a, b)
        a_mean, b_mean = float(np.mean(a)), float(np.mean(b))
    # no interval: a run with no correct answer has no cost per correct answer
    decided = UNDECIDED if np.isnan(lo) else verdict(test.kind, lo, hi, test.margin)
    return out | {"a_mean": a_mean, "b_mean": b_mean, "estimate": est, "ci95": [lo, hi], "verdict": decided}


def _measured(t: dict) -> str:
    if t["verdict"] == MISSING:
        return "-"
    lo, hi = t["ci95"]
    if np.isnan(lo):
        return "no correct answer in a run: no cost per correct answer"
    if t["kind"] in TOKEN_KINDS:
        per = "question" if t["kind"] == "fewer_tokens" else "correct answer"
        whose = f"{t['model']} " if t.get("model") else ""
        return (f"{t['b_label']} {t['b_mean']:.0f} vs {t['a_label']} {t['a_mean']:.0f} {whose}tokens/{per}: "
                f"{t['estimate']:.2f}x [{lo:.2f}, {hi:.2f}]")
    return (f"{t['metric']} {t['a_label']} {t['a_mean']:.3f} vs {t['b_label']} {t['b_mean']:.3f}: "
            f"{t['estimate']:+.3f} [{lo:+.3f}, {hi:+.3f}]")


def render(title: str, claims: list[Claim], results: list[list[dict]], command: str) -> str:
    lines = [f"# {title}", "", f"Made by `{command}` from the run files it names (each test is paired on the "
             "questions both runs answered; 95% bootstrap intervals over questions). Verdicts: `at least` holds when "
             "the interval of the difference lies above -margin and fails when it lies below 0; `clearly below` "
             "holds when it lies below 0 and fails when it lies above -margin; `fewer tokens` (per question, or per "
             "correct answer: tokens over the summed score) holds when the interval of the ratio of b's tokens to "
             "a's lies above 1 and fails when it lies below 1. Anything else is undecided at that n.", "",
             "The prompts column says whether the two runs used today's prompts for their settings (`current`) or "
             "prompts since replaced (`older`, with the fingerprint they recorded): a verdict from older runs is about "
             "those prompts.", "",
             "| claim (paper) | test here | n | measured [95% CI] | verdict | prompts |", "|---|---|---|---|---|---|"]
    names = {"at_least": "at least (margin {m})", "below": "clearly below (margin {m})", "fewer_tokens": "fewer tokens",
             "fewer_tokens_per_correct": "fewer tokens per correct answer"}
    for c, res in zip(claims, results):
        head = f"{c.claim}" + (f" ({c.paper})" if c.paper else "")
        if not res:
            lines.append(f"| {head} | - | - | - | {MISSING} | - |")
        for i, t in enumerate(res):
            whose = f" of {t['model']}" if t.get("model") else ""
            test = f"{t['what']}: {names[t['kind']].format(m=t['margin'])}{whose}; `{t['a']}` vs `{t['b']}`"
            lines.append(f"| {head if i == 0 else ''} | {test} | {t['n'] or '-'} | {_measured(t)} | "
                         f"**{t['verdict']}** | {', '.join(t.get('prompts') or ['-'])} |")
    return "\n".join(lines) + "\n"


def write_claims(claims_file: Path, out: Path, root: Path = Path(".")) -> Path:
    """Evaluate every test of ``claims_file`` against run dirs under ``root`` and write ``out`` (markdown)."""
    title, claims = load_claims(claims_file)
    results = [[evaluate_test(t, root) for t in c.tests] for c in claims]
    command = f"divcon claims {Path(os.path.relpath(claims_file, root)).as_posix()} --out " \
              f"{Path(os.path.relpath(out, root)).as_posix()}"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(title, claims, results, command), encoding="utf-8")
    return out
