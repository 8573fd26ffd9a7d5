"""Benchmark (not a test): distil decomposers and solvers from the embedded teacher, then compare them.

    python benchmarks/bench_distill.py [--task gsm8k] [--train-n 600] [--test-n 300] [--samples 2]
                                       [--out reports/bench_distill] [--stop-after MIN]

GSM8K trains on its train split and evaluates on test; DROP and Bamboogle have no train split, so they train on the
``distill`` half and evaluate on the disjoint ``eval`` half (see divcon.tasks.datasets). ``--test-n 0`` only makes
the students (for the experiment grids in configs/).

Steps, each skipped when its output already exists, so the benchmark resumes across sessions (commit the --out dir):
1. teacher traces on the training split, K samples per question by both routes (decompose + solve, and
   step-by-step single-stage), scored against gold;
2. SD-T / SD-R / SD-route / SE-T / SE-A training sets;
3. LoRA fine-tuning of the student on each, the same number of optimizer steps for every student (``--max-steps``;
   adapters are small and kept in --out; a time box stops training at a checkpoint that the next run resumes from);
   the students decode with llama.cpp, ``lora=<adapter folder>`` deriving each one's LoRA GGUF once into the cache;
4. evaluation on a fixed subset of the evaluation split: T single-stage, T/T, untrained-S/T, SD-T/T, SD-R/T,
   SD-route/T, T/SE-T, T/SE-A, as grid cells run round-robin in chunks of ``--chunk`` questions so that a run cut
   short leaves every row at about the same n; the rows of the decomposer students are evaluated before the solver
   students (SE-T, SE-A) are trained, and theirs after;
5. a report (markdown + JSON) generated from the run files only, every row paired with T/T on the same questions
   with a 95% bootstrap interval.
``--stop-after`` (minutes) ends the run cleanly between examples so a session can commit what it has; the exit
status is then 3 (0 once every step is done), so a driver such as benchmarks/evidence.py knows to resume.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tqdm import tqdm

from divcon.distill.build import build_dataset, route_of
from divcon.distill.generate import SAMPLED_TEMPERATURE, generate_traces
from divcon.distill.train import TrainConfig, train
from divcon.experiments.grid import Cell, Grid, file_status, run_round_robin, write_grid_json
from divcon.experiments.report import build_report
from divcon.runner import StopWhen
from divcon.runs import read_records, write_json
from divcon.tasks import get_task

VARIANTS = ("sd-t", "sd-r", "sd-route", "sd-route-cheap", "se-t", "se-a")
TRAIN_SPLIT = {"gsm8k": "train", "drop": "distill", "bamboogle": "distill"}
BASELINE = "T/T"


def cells(task: str, teacher: str, student: str, students: Path, test_n: int) -> list[Cell]:
    """The rows of the paper's Table 1 that this benchmark covers, plus single-stage T and the router student, as
    grid cells. Students run on llama.cpp (their LoRA, as GGUF, on the base the untrained row uses) and are
    served the bare prompt they were trained on: no demonstrations in a student's own stage (decompose_shots=0 for
    a decomposer, shots=0 for a solver); the teacher's stages keep the tuned defaults."""
    lora = {v: f"{student},lora={students / v}" for v in VARIANTS}
    bare_decomposer, bare_solver = {"decompose_shots": 0}, {"shots": 0}

    def cell(label: str, mode: str, dec: str | None, sol: str, pipeline: dict, variant: str | None = None) -> Cell:
        requires = (str(students / variant / "adapter_model.safetensors"),) if variant else ()
        return Cell(task=task, split=None, limit=test_n, shuffle_seed=None, mode=mode, decomposer=dec, solver=sol,
                    label=label, requires=requires, pipeline=pipeline)

    return [cell("T (single)", "cot", None, teacher, {}),
            cell(BASELINE, "two-stage", teacher, teacher, {}),
            cell("S/T (untrained)", "two-stage", student, teacher, bare_decomposer),
            cell("SD-T/T", "two-stage", lora["sd-t"], teacher, bare_decomposer, "sd-t"),
            cell("SD-R/T", "two-stage", lora["sd-r"], teacher, bare_decomposer, "sd-r"),
            cell("SD-route/T", "two-stage", lora["sd-route"], teacher, bare_decomposer, "sd-route"),
            cell("SD-route-cheap/T", "two-stage", lora["sd-route-cheap"], teacher, bare_decomposer, "sd-route-cheap"),
            cell("T/SE-T", "two-stage", teacher, lora["se-t"], bare_solver, "se-t"),
            cell("T/SE-A", "two-stage", teacher, lora["se-a"], bare_solver, "se-a")]


def student_config(task: str, variant: str, out: Path, student: str, epochs: float, max_steps: int) -> TrainConfig:
    """How a student is trained: here and on a GPU machine (benchmarks/train_on_gpu.py) alike, so either one's adapter
    is the one the other would have made."""
    # a question with a passage (DROP) needs room for it, or the target would be truncated away
    max_len = {"sd": 1024, "se": 1280} if get_task(task).family == "reading" else {"sd": 256, "se": 448}
    return TrainConfig(base=student, data=str(out / "data" / f"{variant}.jsonl"), out=str(out / "students" / variant),
                       epochs=epochs, max_steps=max_steps, max_len=max_len[variant[:2]])


def command(args: argparse.Namespace) -> str:
    variants = "" if args.variants == ",".join(VARIANTS) else f" --variants {args.variants}"
    return (f"python benchmarks/bench_distill.py --task {args.task} --train-n {args.train_n} --test-n {args.test_n} "
            f"--samples {args.samples} --max-steps {args.max_steps}{variants}")


def report(out: Path, args: argparse.Namespace, teacher: str, student: str, grid: list[Cell]) -> str:
    """report.md: how the students were made (traces, training sets, training), then the evaluation table from
    :func:`divcon.experiments.report.build_report` (every row paired with T/T on the same questions)."""
    task = get_task(args.task)
    traces = read_records(out / "traces")
    by_route = {r: [t for t in traces if route_of(t) == r] for r in ("two-stage", "single")}
    lines = [f"# Distillation benchmark: {task.name}", "",
             f"Generated by `{command(args)}` from the run files under this folder (`--report-only` rewrites it).", "",
             f"Teacher T = `{teacher}`, student S = `{student}` (LoRA). Prompts: the tuned defaults of "
             "`divcon.pipeline.PipelineConfig` (see README, Prompts) for the teacher; each student is served the "
             f"bare prompt it was trained on. Traces: {task.name} {TRAIN_SPLIT[task.name]}, first {args.train_n} "
             f"questions, {args.samples} sample(s) per route (decomposer / step-by-step solver at temperature "
             f"{SAMPLED_TEMPERATURE if args.samples > 1 else 0.0})."
             + (" The teacher reached the gold answer in "
                + "; ".join(f"{sum(t['correct'] for t in ts)} of {len(ts)} {r} traces"
                            for r, ts in by_route.items() if ts) + "." if traces else ""), ""]
    counts = {v: json.loads((out / "data" / f"{v}.counts.json").read_text())
              for v in VARIANTS if (out / "data" / f"{v}.counts.json").exists()}
    if counts:
        lines += ["## Training sets", "", "| variant | traces | kept | kept: No decomposition needed | dropped |",
                  "|---|---|---|---|---|"]
        for v, c in counts.items():
            lines.append(f"| {v} | {c['traces']} | {c['kept']} | {c['kept_no_decomposition']} | "
                         f"{json.dumps(c['dropped'])} |")
        lines.append("")
    trained = {v: json.loads((out / "students" / v / "divcon_train.json").read_text())
               for v in VARIANTS if (out / "students" / v / "divcon_train.json").exists()}
    if trained:
        lines += ["## Students", "", "| variant | examples | steps | s/step | final loss | peak RSS MB |",
                  "|---|---|---|---|---|---|"]
        for v, t in trained.items():
            lines.append(f"| {v} | {t['examples_trained']} | {t['steps']} | {t['seconds_per_step']:.1f} | "
                         f"{t.get('final_loss', float('nan')):.3f} | {t['peak_rss_mb']:.0f} |")
        lines += ["", "Peak RSS is the high-water mark of the process that trained, which includes the teacher "
                  "model when the traces were generated earlier in the same run.", ""]
    data: dict = {"command": command(args), "counts": counts, "students": trained}
    started = [c.run_dir(out / "runs") for c in grid if (c.run_dir(out / "runs") / "config.json").exists()]
    if args.test_n and started:
        evaluation = build_report(started, out, f"{task.name}: teachers, students and routes", (BASELINE,))
        data["evaluation"] = evaluation
        lines += ["## Evaluation", "", "From `report.html` / the evaluation part of report.json, made from the run "
                  "dirs under runs/ by divcon's report (so every number is recomputed from the records).", ""]
        table = (out / "report.md").read_text(encoding="utf-8").split("\n", 1)[1]  # without its title line
        lines.append(table.replace("\n## ", "\n### "))
    elif not args.test_n:
        lines.append("No evaluation here (`--test-n 0`): these students are evaluated by configs/table1.yaml.")
    text = "\n".join(lines).rstrip("\n") + "\n"
    (out / "report.md").write_text(text, encoding="utf-8")
    write_json(out / "report.json", data)
    return text


def print_chunk(cell: Cell, s: dict) -> None:
    primary = s["primary"]
    print(f"{cell.label}: n={s['n']} {primary}={s['metrics'][primary]:.3f}", flush=True)


def parser() -> argparse.ArgumentParser:
    """The benchmark's arguments; benchmarks/train_on_gpu.py takes the same ones, so its students are these."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="gsm8k", choices=sorted(TRAIN_SPLIT))
    ap.add_argument("--teacher", default="llamacpp:qwen2.5-1.5b,slots=16",
                    help="16 slots: questions in flight on llama-server, the fastest setting measured here")
    ap.add_argument("--student", default="smollm2-135m")
    ap.add_argument("--train-n", type=int, default=600)
    ap.add_argument("--test-n", type=int, default=300)
    ap.add_argument("--samples", type=int, default=2, help="samples per question and route (K, for SD-R screening)")
    ap.add_argument("--epochs", type=float, default=2.0)
    ap.add_argument("--max-steps", type=int, default=300,
                    help="optimizer steps per student (batch 4), overriding --epochs where > 0: every student gets the "
                         "same training budget however many examples its set kept (-1: --epochs over each set)")
    ap.add_argument("--variants", default=",".join(VARIANTS), help="students to make (comma-separated)")
    ap.add_argument("--chunk", type=int, default=48,
                    help="questions per row per round of the evaluation: a multiple of the 16 slots, since each round "
                         "ends with a tail of fewer questions in flight (a bigger chunk wastes less of it)")
    ap.add_argument("--out", type=Path, default=None, help="default reports/bench_distill (gsm8k), "
                                                           "reports/bench_distill_<task> otherwise")
    ap.add_argument("--stop-after", type=float, default=None, help="minutes; stop cleanly between examples")
    ap.add_argument("--report-only", action="store_true",
                    help="rewrite the report from the run files already there; load and run no model")
    return ap


def out_dir(args: argparse.Namespace) -> Path:
    return args.out or Path("reports/bench_distill" + ("" if args.task == "gsm8k" else f"_{args.task}"))


def main() -> None:
    ap = parser()
    args = ap.parse_args()
    variants = args.variants.split(",")
    if set(variants) - set(VARIANTS):
        ap.error(f"unknown variant(s) {sorted(set(variants) - set(VARIANTS))}; choose from {', '.join(VARIANTS)}")
    if args.test_n and set(variants) != set(VARIANTS):
        ap.error("the evaluation needs every student; use --test-n 0 with --variants")
    out = out_dir(args)
    # the students decode on llama-server too, with as many slots as the teacher, so a student row keeps as many
    # questions in flight as a teacher row (questions in flight = the fewest slots of a row's models)
    teacher, student = args.teacher, f"llamacpp:{args.student},slots=16"
    grid = cells(args.task, teacher, student, out / "students", args.test_n)
    if args.report_only:
        print(report(out, args, teacher, student, grid))
        return
    stop = StopWhen.after_minutes(args.stop_after)
    with tqdm(desc="teacher traces", unit="trace") as bar:
        def trace_progress(k: int, total: int, rec: dict | None) -> None:
            bar.total = total
            bar.update(k)

        # Always both routes: the traces folder is shared by every invocation for this task, whatever its
        # --variants, so its config cannot depend on them (a later `--variants se-t,se-a` must resume the traces
        # that `--variants sd-route` made); the routers need the single-stage route.
        traces, _ = generate_traces(args.task, TRAIN_SPLIT[args.task], teacher, samples=args.samples,
                                    limit=args.train_n, routes=True,
                                    out_dir=out / "traces", on_progress=trace_progress, stop=stop)
    if not stop.out_of_time():  # the traces are complete: a time box reached in there leaves them partial
        for v in variants:
            if not (out / "data" / f"{v}.jsonl").exists():
                build_dataset(traces, v, out / "data" / f"{v}.jsonl")
        # The decomposer students and every row they need are trained and evaluated before the solver students are
        # trained: the decomposer rows answer the benchmark's question, the solver rows are its comparison, and on a
        # slow CPU the two solver students alone take hours. A row whose student is missing is skipped by the
        # round-robin and evaluated once its student exists.
        for group in ([v for v in variants if v.startswith("sd")], [v for v in variants if v.startswith("se")]):
            for v in group:
                if stop.out_of_time():
                    break
                if not (out / "students" / v / "divcon_train.json").exists():
                    train(student_config(args.task, v, out, args.student, args.epochs, args.max_steps),
                          should_stop=stop.out_of_time)
            if args.test_n and not stop.out_of_time():
                runs = out / "runs"
                write_grid_json(runs, Grid(grid, baselines=(BASELINE,)), [file_status(c, runs) for c in grid], None)
                run_round_robin(grid, runs, args.chunk, stop.deadline, on_chunk=print_chunk)
                write_grid_json(runs, Grid(grid, baselines=(BASELINE,)), [file_status(c, runs) for c in grid], None)
    trained = all((out / "students" / v / "divcon_train.json").exists() for v in variants)
    evaluated = not args.test_n or all(file_status(c, out / "runs").status == "done" for c in grid)
    print(report(out, args, teacher, student, grid))
    if not (trained and evaluated):  # only a time box leaves work undone (an error raises): exit 3 means "resume"
        print("stopped at the time limit; re-run the same command to continue", flush=True)
        sys.exit(3)


if __name__ == "__main__":
    main()
