"""Benchmark (not a test): the prompt ablation of a grid config, run round-robin and reported with paired intervals
and records per failure mode.

    python benchmarks/bench_prompts.py [--config configs/prompts_gsm8k.yaml] [--chunk 30] [--stop-after MIN]
                                       [--only LABEL,LABEL]
    python benchmarks/bench_prompts.py --report-only

The cells of the grid (all on one task's dev split) are raised together in rounds of ``--chunk`` questions, so a run
cut short by ``--stop-after`` leaves every cell at about the same n and the comparison already means something;
re-running the same command resumes (the exit status is 3 while chosen cells are unfinished, 0 once they are all
done). The report is ``divcon report`` of the grid (each cell paired with the grid's ``baseline`` on the same
questions) plus, for every two-stage or dynamic cell, counts of its failure modes and a few of its records per mode,
read from the run files.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

from divcon.experiments.grid import Cell, file_status, load_grid, run_round_robin, write_grid_json
from divcon.experiments.report import build_report
from divcon.pipeline import STAGED_MODES, for_family
from divcon.runs import read_records
from divcon.tasks import get_task

EXAMPLES_PER_MODE = 2


def print_chunk(cell: Cell, s: dict) -> None:
    primary = s["primary"]
    print(f"{cell.label}: n={s['n']} {primary}={s['metrics'][primary]:.3f} {s['questions_per_hour'] or 0:.0f} q/h",
          flush=True)


def failure_mode(rec: dict, primary: str, baseline_right: bool | None) -> str | None:
    """One wrong record's failure mode, checked in this order; None for a right one."""
    if rec["metrics"].get(primary, 0.0) >= 1.0:
        return None
    if rec.get("error"):
        return "error"
    if rec.get("truncated"):
        return "cut off at the token limit"
    if rec["answer_source"] != "marker":
        return "no final-answer line"
    if not rec["subquestions"]:
        return "wrong without subquestions"
    if baseline_right:
        return "wrong where the baseline was right"
    return "wrong where the baseline was wrong too"


_STEP = re.compile(r"^\s*\d+\.\s")
_CALCULATION = re.compile(r"\d\s*[-+x*/×÷]\s*\$?\d|=")


def uncalculated_share(records: list[dict]) -> float | None:
    """Of the solver's numbered answer lines (working style: one per subquestion), the share that holds no
    calculation: a subquestion that restated a given ("How many candy bars does Jen buy? 50.") instead of asking for
    a step. None when no record has numbered lines."""
    steps = [line for r in records for line in r["final_output"].splitlines() if _STEP.match(line)]
    if not steps:
        return None
    return sum(1 for line in steps if not _CALCULATION.search(line)) / len(steps)


def _clip(text: str, n: int = 700) -> str:
    text = (text or "").strip()
    return text if len(text) <= n else text[:n] + " [...]"


def failure_sections(cells: list[Cell], out: Path, baseline: str | None) -> list[str]:
    base = next((c for c in cells if c.label == baseline), None)
    base_right = {}
    if base is not None:
        primary = get_task(base.task).primary
        base_right = {r["id"]: r["metrics"].get(primary, 0.0) >= 1.0 for r in read_records(base.run_dir(out))}
    lines = ["## Failure modes", "",
             "Wrong answers of each decomposing cell, each counted under the first of: error, cut off at the token "
             "limit, no final-answer line, wrong without subquestions (the decomposer wrote none, so the solver "
             "worked alone), wrong where the baseline was right, wrong where the baseline was wrong too. "
             f"Then up to {EXAMPLES_PER_MODE} records per mode (the first in question order), clipped. For math "
             "cells whose solver answers subquestion by subquestion (working, short), the last column is the share of "
             "its numbered answer lines with no calculation in them: subquestions that restated a given number "
             "instead of asking for a step.", ""]
    staged = [c for c in cells if c.mode in STAGED_MODES]
    table = ["| cell | n | wrong | " + " | ".join(MODES) + " | answer lines without a calculation |",
             "|---|---|---|" + "---|" * len(MODES) + "---|"]
    examples: list[str] = []
    for c in staged:
        records = sorted(read_records(c.run_dir(out)), key=lambda r: int(r["id"].rsplit("-", 1)[1]))
        if not records:
            continue
        primary = get_task(c.task).primary
        by_mode: dict[str, list[dict]] = {m: [] for m in MODES}
        for r in records:
            mode = failure_mode(r, primary, base_right.get(r["id"]))
            if mode:
                by_mode[mode].append(r)
        wrong = sum(len(v) for v in by_mode.values())
        share = (uncalculated_share(records) if get_task(c.task).family == "math" and c.mode == "two-stage"
                 and for_family(c.pipeline_config(), "math").solve_style != "plan" else None)
        table.append(f"| {c.label} | {len(records)} | {wrong} | " + " | ".join(str(len(by_mode[m])) for m in MODES)
                     + f" | {'-' if share is None else f'{share:.0%}'} |")
        examples += [f"### {c.label}", ""]
        for m in MODES:
            for r in by_mode[m][:EXAMPLES_PER_MODE]:
                subs = "; ".join(r["subquestions"]) or "(none)"
                solved = r["outputs"].get("transcript") or r["final_output"]
                examples += [f"**{m}** ({r['id']}, gold {', '.join(r['golds'])}, answered {r['answer']})", "",
                             f"> {_clip(r['question'], 400)}", "", f"Subquestions: {subs}", "",
                             "```", _clip(solved), "```", ""]
    return lines + table + [""] + examples


MODES = ("error", "cut off at the token limit", "no final-answer line", "wrong without subquestions",
         "wrong where the baseline was right", "wrong where the baseline was wrong too")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", type=Path, default=Path("configs/prompts_gsm8k.yaml"))
    ap.add_argument("--chunk", type=int, default=30, help="questions per cell per round")
    ap.add_argument("--stop-after", type=float, default=None, help="minutes; then finish the questions in flight")
    ap.add_argument("--only", default=None, help="comma-separated cell labels to run (the report shows every cell)")
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("--report", type=Path, default=None, help="report folder (default: the grid dir's parent)")
    args = ap.parse_args()

    grid = load_grid(args.config)
    out = grid.out or Path("runs/experiments") / args.config.stem
    report_dir = args.report or out.parent
    write_grid_json(out, grid, [file_status(c, out) for c in grid.cells], args.config)
    chosen = grid.cells
    if args.only:
        labels = [x.strip() for x in args.only.split(",")]
        unknown = sorted(set(labels) - {c.label for c in grid.cells})
        if unknown:
            ap.error(f"no cell labelled {', '.join(unknown)}")
        chosen = [c for c in grid.cells if c.label in labels]
    if not args.report_only:
        deadline = time.monotonic() + args.stop_after * 60 if args.stop_after is not None else None
        run_round_robin(chosen, out, args.chunk, deadline, on_chunk=print_chunk)
    statuses = {c.label: file_status(c, out) for c in grid.cells}  # labels are unique in a grid
    if not args.report_only:
        write_grid_json(out, grid, list(statuses.values()), args.config)
    started = [c.run_dir(out) for c in grid.cells if (c.run_dir(out) / "config.json").exists()]
    build_report(started, report_dir, grid.title or args.config.stem, grid.baselines)
    md = report_dir / "report.md"
    text = md.read_text(encoding="utf-8")
    made_by = (f"Made by `python benchmarks/bench_prompts.py --config {args.config.as_posix()}` (resumable; "
               "`--report-only` rewrites this report from the run files).")
    head, _, rest = text.partition("\n\n")
    failures = "\n".join(failure_sections(grid.cells, out, next(iter(grid.baselines), None)))  # the first
    md.write_text("\n\n".join([head, made_by, rest.rstrip("\n"), failures]) + "\n", encoding="utf-8")
    print(json.dumps({label: s.done for label, s in statuses.items()}), flush=True)
    print(f"report: {md}")
    failed = [f"{c.label}: {statuses[c.label].reason}" for c in chosen if statuses[c.label].status == "failed"]
    if failed:
        sys.exit("cells that cannot run: " + "; ".join(failed))
    if not args.report_only and any(statuses[c.label].status not in ("done", "skipped") for c in chosen):
        print("stopped at the time limit; re-run the same command to continue", flush=True)
        sys.exit(3)  # as bench_distill: "resume", for a driver such as benchmarks/evidence.py


if __name__ == "__main__":
    main()
