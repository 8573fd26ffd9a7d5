"""Benchmark report (no model runs): how far a cell run twice with the very same settings agrees with itself.

    python benchmarks/rerun_agreement.py [--root reports] [--out reports/reruns]

Why: every cell is greedy (temperature 0, seed 0), yet llama-server decodes up to 16 questions in one batch, and
llama.cpp's arithmetic is not invariant to the batch a sequence shares (llama.cpp PR #6950, issue #7052): the same
prompt can get a different token once two logits are close, and from there a different answer. A rerun of a cell is
then not a copy of it, and the size of that drift is the noise floor under every comparison of two grids (Table 1's
T/T against the generalization grid's T/T, say). Within one grid the call cache makes cells that share a stage share
its outputs, so paired comparisons inside a grid are not affected by this; across grids they are.

The committed run files already hold such reruns: the same task, split, mode, model identities, pipeline settings and
prompts in two run dirs (Table 1, Table 6 and the generalization grid each run T/T on GSM8K, each on its own call
cache or another session's machine). For each pair this writes, on the questions both answered: how many got the same
decomposition and the same final output, how many changed score, both scores, and the paired difference with its
bootstrap interval. ``reports/reruns/report.md`` and ``report.json``; run it again after new runs land.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
from pathlib import Path

from divcon.experiments.report import Run, load_run
from divcon.experiments.stats import paired_diff_ci
from divcon.runs import write_json
from divcon.tasks import get_task

# What makes two runs the same experiment: everything in config.json except the size asked for and the version of
# divcon that wrote it (the prompts fingerprint already changes with any prompt), and the model specs, whose
# slots= does not change a model (``models`` holds the identity of the weights and adapter each stage ran).
IGNORED = ("limit", "divcon_version", "decomposer", "solver")


def settings_key(config: dict) -> str:
    """A canonical string of the settings that define a run, for grouping reruns."""
    return json.dumps({k: v for k, v in config.items() if k not in IGNORED}, sort_keys=True)


def find_runs(root: Path) -> list[Path]:
    """Every evaluation run dir under ``root`` that has records: a config.json naming a solver beside a
    records.jsonl (teacher-trace folders have the same two files but name a teacher, and are not evaluations)."""
    return sorted(p.parent for p in root.rglob("config.json") if (p.parent / "records.jsonl").exists()
                  and "solver" in json.loads(p.read_text(encoding="utf-8")))


def _rel(path: Path) -> str:
    """A run dir as committed files name it: relative to the working directory (the repository root)."""
    return Path(os.path.relpath(path)).as_posix()


def compare(a: Run, b: Run) -> dict:
    """Agreement of two runs of the same settings on the questions both answered (one record per question: the
    first sample, as the reports score it)."""
    primary = get_task(a.config["task"]).primary
    ra, rb = ({r["id"]: r for r in run.records if r.get("sample", 0) == 0} for run in (a, b))
    ids = sorted(set(ra) & set(rb))
    sa, sb = ([rs[i]["metrics"].get(primary, 0.0) for i in ids] for rs in (ra, rb))
    diff, lo, hi = paired_diff_ci(sa, sb)

    def same(field: str) -> int:
        return sum((ra[i].get("outputs") or {}).get(field) == (rb[i].get("outputs") or {}).get(field) for i in ids)

    return {"task": a.config["task"], "split": a.config.get("split"), "mode": a.config.get("mode"),
            "label": a.label, "a": _rel(a.run_dir), "b": _rel(b.run_dir), "n": len(ids),
            "metric": primary,
            "same_decomposition": same("decompose") if a.config.get("mode") != "cot" else None,
            "same_final_output": sum(ra[i].get("final_output") == rb[i].get("final_output") for i in ids),
            "score_changed": sum(x != y for x, y in zip(sa, sb)),
            "a_mean": sum(sa) / len(ids) if ids else None, "b_mean": sum(sb) / len(ids) if ids else None,
            "diff": diff, "ci95": [lo, hi]}


def rerun_pairs(root: Path) -> list[dict]:
    """Every pair of run dirs under ``root`` with the same settings that share at least one question."""
    groups: dict[str, list[Run]] = {}
    for d in find_runs(root):
        run = load_run(d)
        groups.setdefault(settings_key(run.config), []).append(run)
    pairs = []
    for runs in groups.values():
        for a, b in itertools.combinations(runs, 2):
            pair = compare(a, b)
            if pair["n"]:
                pairs.append(pair)
    return sorted(pairs, key=lambda p: (p["task"], p["label"], p["a"], p["b"]))


def render(pairs: list[dict]) -> str:
    lines = ["# Reruns: the same cell, run twice, against itself", "",
             "Made by `python benchmarks/rerun_agreement.py` from the committed run files (no model runs). Two run "
             "dirs are reruns when their config.json agree on everything but the size asked for: task, split, mode, "
             "model identities (weights and adapter), pipeline settings, prompts. Every cell is greedy (temperature "
             "0, seed 0), but llama-server decodes many questions in one batch and llama.cpp's arithmetic depends on "
             "the batch (llama.cpp PR #6950, issue #7052), so a rerun is not a copy.", "",
             "Scores are on the questions both runs answered; the difference is a minus b with a 95% paired "
             "bootstrap interval over questions. Within one grid, cells that share a stage share its outputs (the "
             "call cache), so this drift only enters comparisons across grids or across call caches.", ""]
    if not pairs:
        return "\n".join(lines + ["No two runs with the same settings share a question yet.", ""])
    lines += ["| task | cell | run a | run b | n | same decomposition | same final output | score changed | "
              "metric | a | b | a - b [95% CI] |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for p in pairs:
        n, same_dec = p["n"], p["same_decomposition"]
        dec = "-" if same_dec is None else f"{same_dec} ({same_dec / n:.0%})"
        lines.append(f"| {p['task']} {p['split']} | {p['label']} | `{p['a']}` | `{p['b']}` | "
                     f"{n} | {dec} | {p['same_final_output']} ({p['same_final_output'] / n:.0%}) | "
                     f"{p['score_changed']} ({p['score_changed'] / n:.0%}) | {p['metric']} | {p['a_mean']:.3f} | "
                     f"{p['b_mean']:.3f} | {p['diff']:+.3f} [{p['ci95'][0]:+.3f}, {p['ci95'][1]:+.3f}] |")
    n = sum(p["n"] for p in pairs)
    same, changed = (sum(p[k] for p in pairs) for k in ("same_final_output", "score_changed"))
    widest = max(pairs, key=lambda p: abs(p["diff"]))
    lines += ["", f"Over all {len(pairs)} pairs ({n} question pairs): the final output was the same for {same} "
                  f"({same / n:.0%}) and the score changed for {changed} ({changed / n:.0%}). Largest drift: "
                  f"{widest['label']} on {widest['task']}, {widest['diff']:+.3f} {widest['metric']} over "
                  f"{widest['n']} questions. Read a difference between two grids' cells against this floor.", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=Path("reports"), help="where to look for run dirs")
    ap.add_argument("--out", type=Path, default=Path("reports/reruns"))
    args = ap.parse_args()
    pairs = rerun_pairs(args.root)
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "report.json", {"command": "python benchmarks/rerun_agreement.py", "pairs": pairs})
    (args.out / "report.md").write_text(render(pairs), encoding="utf-8")
    print(f"{len(pairs)} rerun pairs -> {args.out / 'report.md'}")


if __name__ == "__main__":
    main()
