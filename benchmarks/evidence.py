"""Benchmark driver (not a test): every measurement the open issues still need, made in order inside one time box and
resumed by the next session, so the committed evidence is reproduced by one command.

    python benchmarks/evidence.py --stop-after MIN    # run the next steps until MIN minutes are spent
    python benchmarks/evidence.py --list              # the steps, their commands and what the state file says

Each step is a command of this repository that resumes from its own files, exits 0 once its work is complete and 3
when a time box stopped it (``divcon experiment``, ``benchmarks/bench_distill.py``, ``benchmarks/bench_prompts.py``).
The driver gives each step the minutes left, stops at the first that exits 3 (and exits 3 itself), and stops on any
other status with that status. A step with a ``review`` (a choice a person makes from its report, such as the tuned
prompts that the next step's traces use) also stops the driver, once, when it first completes. Every run starts
from the first step; one that finished is skipped outright (its report and its minutes left alone) while its
arguments and the scripts and configs they name are those it finished with, and resumes its files once they change
(a larger size in a config). After the steps, whatever happened, the claims page and the reruns report are
rewritten from the run files (``divcon claims``, ``benchmarks/rerun_agreement.py``).

The first time a step starts, it deletes the outputs it remakes (``replaces``: runs of earlier prompts or students
that must not be mixed with the new ones); the state file ``reports/evidence.json`` (commit it with the reports)
records which steps have started and finished and the minutes each has run, so a resumed step keeps its files.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

STATE = Path("reports/evidence.json")
RESUME = 3  # the exit status of a step that a time box stopped
MIN_MINUTES = 2.0  # a step given less cannot load its models and do anything worth keeping
PY = sys.executable
DIVCON = str(Path(sys.executable).parent / "divcon")  # the console script installed beside this interpreter


@dataclass(frozen=True)
class Step:
    """One resumable command; ``argv`` takes ``--stop-after MIN`` appended, ``report`` (no model) runs after it."""
    name: str
    why: str
    argv: tuple[str, ...]
    report: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    replaces: tuple[str, ...] = ()
    review: str = ""  # a decision a person makes from this step's report before the next step may start


def distill(task: str, *args: str) -> tuple[str, ...]:
    return (PY, "benchmarks/bench_distill.py", "--task", task, *args)


# Every student's evaluation is Table 1's (bench_distill --test-n 0): an evaluation of its own would repeat Table 1's
# GSM8K rows on the same questions, and the call cache that could share them does not outlive a machine. The GSM8K part
# of Table 1 runs right after the decomposer students and only up to issue 12's n (300 a row): at ~50 minutes a round of
# 48 questions for all its rows on 2 cores, GSM8K's 500 would hold DROP and Bamboogle back for sessions. The later,
# all-task step raises DROP and Bamboogle first (a round-robin raises the cells with fewest records), then every row
# to the config's sizes. The solver students' rows are in both (trained on a lent GPU; on 2 CPU cores they take hours).
#
# The all-task step, Table 6 and the generalization grid are each several sessions of 2-core compute at their full
# sizes, and run one after another a report would wait sessions for its first number. So each first runs a short stage
# (Table 1's Bamboogle rows, whole 54 questions; Table 6 and the generalization grid up to 48 questions a cell) and the
# full steps after them resume the same run files to the config's sizes.
TABLE1 = (DIVCON, "experiment", "configs/table1.yaml", "--chunk", "48")
TABLE1_REPORT = (DIVCON, "report", "reports/table1/runs", "--out", "reports/table1")
TABLE6 = (DIVCON, "experiment", "configs/static_vs_dynamic.yaml", "--chunk", "48")
TABLE6_REPORT = (DIVCON, "report", "reports/static_vs_dynamic/runs", "--out", "reports/static_vs_dynamic")
TABLE6_ENV = {"DIVCON_DB": "runs/calls-static-vs-dynamic.sqlite"}  # its own call log: questions/hour is measured
GENERAL = (DIVCON, "experiment", "configs/generalization.yaml", "--chunk", "48")
GENERAL_REPORT = (DIVCON, "report", "reports/generalization/runs", "--out", "reports/generalization")
STEPS = (
    Step("distill-gsm8k", "issue 12: the three GSM8K decomposer students (SD-T, SD-R, SD-route)",
         distill("gsm8k", "--train-n", "600", "--test-n", "0", "--samples", "2", "--variants", "sd-t,sd-r,sd-route")),
    # added after SD-route decomposed all but 3 of 144 test questions: ties between the routes taught as "decompose"
    Step("distill-gsm8k-router-cheap", "issue 12: the GSM8K router with ties to the cheaper route (sd-route-cheap)",
         distill("gsm8k", "--train-n", "600", "--test-n", "0", "--samples", "2", "--variants", "sd-route-cheap")),
    Step("table1-gsm8k", "issues 12/14: Table 1's GSM8K rows up to n=300 (issue 12's n)",
         TABLE1 + ("--only-task", "gsm8k", "--up-to", "300"), report=TABLE1_REPORT, replaces=("reports/table1/runs",)),
    Step("distill-gsm8k-solvers", "issue 12: the two GSM8K solver students (SE-T, SE-A)",
         distill("gsm8k", "--train-n", "600", "--test-n", "0", "--samples", "2", "--variants", "se-t,se-a")),
    Step("prompts-drop", "issue 12: the DROP dev ablation at n=150 for single-stage and the two 2-shot two-stage "
                         "prompts",
         (PY, "benchmarks/bench_prompts.py", "--config", "configs/prompts_drop.yaml",
          "--only", "cot 2-shot,T/T working 2-shot,T/T plan 2-shot"),
         review="set the reading family's tuned defaults (divcon.pipeline.TUNED) from reports/prompts_drop/report.md: "
                "the DROP students' teacher traces are made with them next"),
    # issue 12's last target (DROP eval n>=200: T/T F1 >= T single F1) needs no student, so these two rows go first,
    # ahead of the rest of the DROP students' training (added once distill-drop had started); the later all-task
    # step raises them to 300 with the other rows
    Step("table1-drop-teacher", "issue 12: Table 1's DROP rows T single and T/T up to n=200 (issue 12's DROP n)",
         TABLE1 + ("--only-task", "drop", "--only-label", "T (single)", "--only-label", "T/T", "--up-to", "200"),
         report=TABLE1_REPORT),
    # DROP and Bamboogle sets are small (Bamboogle's distill half is 71 questions): two epochs over each set
    # (--max-steps -1), not GSM8K's fixed 300 steps, which would be many epochs over a few hundred examples
    Step("distill-drop", "issues 12/14: the DROP decomposer students, 2 samples per route (SD-R screening, routers)",
         distill("drop", "--train-n", "120", "--test-n", "0", "--samples", "2", "--max-steps", "-1",
                 "--variants", "sd-t,sd-r,sd-route,sd-route-cheap"),
         replaces=("reports/bench_distill_drop",)),
    Step("distill-bamboogle", "issue 14: the Bamboogle decomposer students",
         distill("bamboogle", "--train-n", "71", "--test-n", "0", "--samples", "2", "--max-steps", "-1",
                 "--variants", "sd-t,sd-r,sd-route,sd-route-cheap"),
         replaces=("reports/bench_distill_bamboogle",)),
    Step("table1-bamboogle", "issue 14: Table 1's Bamboogle rows, all 54 eval questions",
         TABLE1 + ("--only-task", "bamboogle"), report=TABLE1_REPORT),
    Step("static-vs-dynamic-48", "issue 14: Table 6's first stage, 48 questions a cell",
         TABLE6 + ("--up-to", "48"), report=TABLE6_REPORT, env=TABLE6_ENV),
    # added once generalization-48 had run GSM8K and most of DROP (at ~1.5-3 questions a minute, its Q-solver cells on
    # four more sets are another session): the rows of the paper's two generalization claims, solver T, go first
    Step("generalization-48-solver-t", "issue 14: the generalization grid's first stage, 48 questions a cell, the "
                                       "solver-T cells (a distilled decomposer, and the distilled solver, off-task)",
         GENERAL + ("--up-to", "48", "--only-label", "T/T", "--only-label", "SD(gsm8k)/T",
                    "--only-label", "SD(drop)/T", "--only-label", "T/SE-A(gsm8k)"), report=GENERAL_REPORT),
    Step("generalization-48", "issue 14: the generalization grid's first stage, 48 questions a cell",
         GENERAL + ("--up-to", "48"), report=GENERAL_REPORT),
    # added while table1 was raising DROP (its round-robin fills the cells with fewest records, so DROP went first):
    # DROP's rows to 300 as a step of their own, then the grid's decomposer cells with solver T at full size, which
    # decide the paper's generalization claim (all undecided at 48), ahead of GSM8K's rows from 300 (issue 12's n)
    # to 500; the distilled solver's off-task cells are decided at 48 already and wait for the full grid step
    Step("table1-drop", "issue 14: Table 1's DROP rows to 300",
         TABLE1 + ("--only-task", "drop"), report=TABLE1_REPORT),
    Step("generalization-decomposers", "issue 14: the generalization grid's distilled-decomposer cells and their "
                                       "T/T baselines, solver T, at full size (the paper's generalization claim)",
         GENERAL + ("--only-label", "T/T", "--only-label", "SD(gsm8k)/T", "--only-label", "SD(drop)/T"),
         report=GENERAL_REPORT),
    Step("table1", "issue 14: the rest of Table 1 (began with DROP's rows, before table1-drop; GSM8K to 500)",
         TABLE1, report=TABLE1_REPORT),
    Step("static-vs-dynamic", "issue 14: Table 6, static two-stage vs self-ask, on a call log of its own so that "
                              "questions/hour is measured",
         TABLE6, report=TABLE6_REPORT, env=TABLE6_ENV),
    Step("generalization", "issue 14: distilled decomposers (and a distilled solver) on other tasks and solvers",
         GENERAL, report=GENERAL_REPORT),
)
CLAIMS = (DIVCON, "claims", "configs/claims.yaml", "--out", "reports/README.md")
RERUNS = (PY, "benchmarks/rerun_agreement.py")  # how far cells run twice (in two grids) agree: the noise floor
PAGES = (CLAIMS, RERUNS)  # rewritten from the run files after the steps, whatever happened (no model runs)


def call(argv: list[str], env: dict[str, str]) -> int:
    """Run one command in the foreground, its output on ours; its exit status."""
    print("$ " + " ".join(f"{k}={v} " for k, v in env.items()) + shlex.join(argv), flush=True)
    return subprocess.run(argv, env={**os.environ, **env}, check=False).returncode


def load_state(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def save_state(path: Path, state: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def named_files(step: Step) -> set[str]:
    """The scripts and configs a step's command and report name, as repository-relative paths."""
    return {arg for arg in step.argv[1:] + step.report[1:] if arg.endswith((".py", ".yaml"))}


def fingerprint(step: Step) -> str:
    """What a finished step's outputs depend on that a person edits: its arguments, environment and the contents of
    the scripts and configs they name. The interpreter's path is left out: the state file is committed."""
    h, files = hashlib.sha256(), named_files(step)
    for arg in step.argv[1:] + ("|",) + step.report[1:] + tuple(f"{k}={v}" for k, v in sorted(step.env.items())):
        h.update(arg.encode() + b"\0")
        if arg in files and Path(arg).is_file():
            h.update(Path(arg).read_bytes())
    return h.hexdigest()[:16]


def run_steps(steps: tuple[Step, ...], minutes: float | None, state_path: Path = STATE,
              run: Callable[[list[str], dict[str, str]], int] = call,
              clock: Callable[[], float] = time.monotonic) -> int:
    """Run ``steps`` in order within ``minutes`` (None: no time box); 0 when all are complete, 3 when the time box
    ended one, or the status of the first that failed. The pages (the claims, the reruns) are rewritten in every
    case."""
    start = clock()
    rc = 0
    state = load_state(state_path)  # only this driver writes it
    for step in steps:
        left = None if minutes is None else minutes - (clock() - start) / 60
        if left is not None and left < MIN_MINUTES:
            rc = RESUME
            break
        entry = state.setdefault(step.name, {})
        if "finished" in entry and entry.get("fingerprint") == fingerprint(step):
            print(f"step {step.name} is complete (finished {entry['finished']}): skipped", flush=True)
            continue
        if "started" not in entry:
            for p in step.replaces:  # stale outputs of earlier prompts or students: remade, never mixed
                shutil.rmtree(p, ignore_errors=True)
            entry.update(started=now(), minutes=0.0)
            save_state(state_path, state)
        t0 = clock()
        try:
            rc = run(list(step.argv) + ([] if left is None else ["--stop-after", f"{left:.1f}"]), step.env)
            if step.report and rc in (0, RESUME):
                rc_report = run(list(step.report), step.env)
                rc = rc if rc_report == 0 else rc_report
            first_finish = rc == 0 and "finished" not in entry
            if rc == 0:
                entry.setdefault("finished", now())
                entry["fingerprint"] = fingerprint(step)
        finally:  # a step stopped by a signal (Ctrl-C, a kill at a session's end) still has its minutes counted
            entry["minutes"] = round(entry.get("minutes", 0.0) + (clock() - t0) / 60, 1)
            save_state(state_path, state)
        if first_finish and step.review:
            print(f"step {step.name} is complete; before the next step, {step.review}; then re-run this command",
                  flush=True)
            rc = RESUME
            break
        if rc != 0:
            print(f"step {step.name} " + ("stopped at the time limit: re-run this command to continue" if rc == RESUME
                                          else f"failed with status {rc}"), flush=True)
            break
    rc_pages = [run(list(page), {}) for page in PAGES]
    return rc if rc != 0 else next((r for r in rc_pages if r != 0), 0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stop-after", type=float, default=None, help="minutes for all the steps together")
    ap.add_argument("--list", action="store_true", help="print the steps and their state; run nothing")
    args = ap.parse_args()
    if args.list:
        state = load_state(STATE)
        for s in STEPS:
            e = state.get(s.name, {})
            where = ("finished " + e["finished"] if "finished" in e else f"started, {e['minutes']} min so far"
                     if "started" in e else "not started")
            print(f"{s.name}: {where}\n  {s.why}\n  $ " + shlex.join(s.argv)
                  + (f"\n  then, before the next step: {s.review}" if s.review else ""))
        return
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))  # unwinds run_steps' finally
    sys.exit(run_steps(STEPS, args.stop_after))


if __name__ == "__main__":
    main()
