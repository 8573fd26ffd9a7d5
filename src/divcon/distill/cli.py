"""``divcon distill``: teacher traces -> training sets -> LoRA students. Heavy imports stay inside the commands so
that ``divcon --help`` never loads torch."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from divcon.console import (DECOMPOSE_SHOTS_HELP, DECOMPOSE_STYLE_HELP, SHOTS_HELP, STYLE_HELP, console, fail,
                            progress_bar, progress_callback, prompt_options, set_data_dir)

app = typer.Typer(help="Distill the decomposer (or solver): generate teacher traces, build training sets, train "
                       "LoRA students.", no_args_is_help=True, pretty_exceptions_show_locals=False)

VARIANT_HELP = "sd-t | sd-r | se-t | se-a | sd-route | sd-route-cheap (the routers need traces made with --routes)"


@app.command()
def generate(
    task: str = typer.Option("gsm8k", help="Task name (see `divcon tasks`)."),
    split: str = typer.Option("train", help="Split to draw questions from (never the evaluation split)."),
    teacher: str = typer.Option("llamacpp:qwen2.5-1.5b", help="Model spec of the teacher (decomposer and solver)."),
    samples: int = typer.Option(1, min=1, help="Decompositions per question (K); K > 1 samples at --temperature."),
    temperature: Optional[float] = typer.Option(None, min=0.0,
                                                help="Decomposer temperature (default 0, or 0.7 when K > 1)."),
    limit: Optional[int] = typer.Option(None, min=1, help="First N questions of the split."),
    offset: int = typer.Option(0, min=0),
    out: Optional[Path] = typer.Option(None, help="Traces dir (default runs/traces/<derived name>)."),
    max_subquestions: int = typer.Option(4, min=1, max=16),
    routes: bool = typer.Option(False, "--routes", help="Also solve each question single-stage, K times (what the "
                                                        "router training sets, sd-route and sd-route-cheap, need)."),
    shots: Optional[int] = typer.Option(None, min=0, help=SHOTS_HELP),
    decompose_shots: Optional[int] = typer.Option(None, min=0, help=DECOMPOSE_SHOTS_HELP),
    solve_style: Optional[str] = typer.Option(None, help=STYLE_HELP),
    decompose_style: Optional[str] = typer.Option(None, help=DECOMPOSE_STYLE_HELP),
    concurrency: Optional[int] = typer.Option(None, min=1, help="(question, sample) pairs in flight at once "
                                                               "(default: what the teacher serves at once)."),
    data_dir: Optional[Path] = typer.Option(None, help="Folder of the data sets (default ../shared/data)."),
) -> None:
    """Teacher traces: decompose, solve and score each question. Re-run the same command to resume."""
    from divcon.distill.generate import generate_traces
    from divcon.pipeline import PipelineConfig

    set_data_dir(data_dir)
    try:
        pcfg = PipelineConfig(max_subquestions=max_subquestions,
                              **prompt_options(shots, decompose_shots, solve_style, decompose_style))
        with progress_bar() as bar:
            bar_id = bar.add_task(f"traces {task}", total=None, status="")
            on_progress = progress_callback(bar, bar_id, "correct", lambda rec: float(rec["correct"]))
            run_dir, summary = generate_traces(task, split, teacher, samples=samples, temperature=temperature,
                                               limit=limit, offset=offset, out_dir=out, on_progress=on_progress,
                                               concurrency=concurrency, pipeline=pcfg,
                                               routes=routes)
    except (ValueError, RuntimeError, OSError) as e:
        fail(str(e))
    t = Table("traces", "questions", "correct", "accuracy", "questions with a correct trace")
    t.add_row(str(summary["traces"]), str(summary["questions"]), str(summary["correct"]),
              f"{summary['accuracy']:.3f}", str(summary["questions_with_a_correct_trace"]))
    console.print(t)
    console.print(f"traces dir: {run_dir}")


@app.command()
def build(
    traces: Path = typer.Option(..., help="Traces dir (or its records.jsonl)."),
    variant: str = typer.Option(..., help=VARIANT_HELP),
    out: Path = typer.Option(..., help="Training set JSONL to write (counts go next to it, as <name>.counts.json)."),
    best_only: bool = typer.Option(False, help="sd-r: keep one correct decomposition per question (fewest "
                                               "subquestions, then lowest sample)."),
) -> None:
    """Build a chat training set from traces and print what was kept and dropped."""
    from divcon.distill.build import build_dataset

    try:
        counts = build_dataset(traces, variant, out, best_only=best_only)
    except (ValueError, OSError, KeyError) as e:
        fail(str(e))
    t = Table("variant", "traces", "questions", "kept", "kept questions", "kept 'no decomposition'", "dropped")
    dropped = ", ".join(f"{k} {v}" for k, v in counts["dropped"].items()) or "-"
    t.add_row(counts["variant"] + (" (best only)" if best_only else ""), str(counts["traces"]),
              str(counts["questions"]), str(counts["kept"]), str(counts["kept_questions"]),
              str(counts["kept_no_decomposition"]), dropped)
    console.print(t)
    console.print(f"training set: {out}")


@app.command()
def train(
    base: str = typer.Option("smollm2-135m", help="Embedded alias or HF model folder of the student."),
    data: Path = typer.Option(..., help="Training set JSONL (from `divcon distill build`)."),
    out: Path = typer.Option(..., help="Adapter folder to write; serve it as hf:<out>."),
    epochs: float = typer.Option(1.0, min=0.0),
    max_steps: int = typer.Option(-1, min=-1, help="Stop after N optimizer steps (> 0 overrides --epochs)."),
    max_examples: Optional[int] = typer.Option(None, min=1, help="Use the first N examples only."),
    lr: float = typer.Option(2e-4, min=0.0),
    lora_r: int = typer.Option(16, min=1),
    batch_size: int = typer.Option(4, min=1),
    max_len: int = typer.Option(512, min=16, help="Max tokens per example (prompt + target)."),
    target_modules: str = typer.Option("q_proj,k_proj,v_proj,o_proj",
                                       help="LoRA target modules, comma-separated, or all-linear."),
    save_steps: int = typer.Option(25, min=1, help="Checkpoint interval; re-running the same command resumes."),
    stop_after: Optional[float] = typer.Option(None, min=0.0, help="Minutes; then stop at a checkpoint after the "
                                               "step in progress and exit with status 3 (re-run the same command "
                                               "to go on)."),
) -> None:
    """LoRA fine-tune a student, loss on the assistant turn only. CPU unless a GPU is available."""
    from divcon.distill.train import TrainConfig, train as run_train
    from divcon.runner import StopWhen

    if not data.exists():
        fail(f"training set not found: {data}")
    try:
        s = run_train(TrainConfig(base=base, data=str(data), out=str(out), epochs=epochs, max_steps=max_steps,
                                  max_examples=max_examples, lr=lr, lora_r=lora_r, batch_size=batch_size,
                                  max_len=max_len, target_modules=target_modules, save_steps=save_steps),
                      should_stop=StopWhen.after_minutes(stop_after).out_of_time)
    except (ValueError, RuntimeError, OSError) as e:
        fail(str(e))
    if s is None:
        console.print(f"stopped at the time limit with a checkpoint in {out / 'checkpoints'}; "
                      "re-run the same command to go on")
        raise typer.Exit(3)
    t = Table("examples", "steps", "device", "s/step", "train s (all runs)", "peak RSS MB", "final loss")
    t.add_row(str(s["examples"]), str(s["steps"]), s["device"], f"{s['seconds_per_step']:.2f}",
              "-" if s["train_seconds"] is None else f"{s['train_seconds']:.0f}", f"{s['peak_rss_mb']:.0f}",
              f"{s['final_loss']:.4f}" if s["final_loss"] is not None else "-")
    console.print(t)
    llamacpp = f"llamacpp:{s['base_alias']},lora={out} or " if s.get("base_alias") else ""
    console.print(f"adapter: {out}  (serve with --decomposer {llamacpp}hf:{out.resolve()})")


@app.command()
def export(
    adapter: Path = typer.Argument(..., help="Adapter folder written by `divcon distill train`."),
    out: Optional[Path] = typer.Option(None, help="GGUF file to write (default <adapter>/lora.gguf)."),
) -> None:
    """Export a student's LoRA as a llama.cpp adapter GGUF: it then decodes with llama.cpp on its embedded base,
    several times faster on CPU than through transformers. Only for a standalone file: llamacpp:<alias>,lora=<adapter
    folder> derives the same GGUF itself, once, into the cache."""
    from divcon.distill.export import ExportError, export_lora_gguf

    if not (adapter / "adapter_config.json").exists():
        fail(f"no LoRA adapter in {adapter} (adapter_config.json missing)")
    try:
        path, spec = export_lora_gguf(adapter, out)
    except ExportError as e:
        fail(str(e))
    console.print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB); serve it as {spec}")


@app.command()
def ship(
    adapter: Path = typer.Argument(..., help="Adapter folder written by `divcon distill train`."),
    alias: str = typer.Option(..., help="The model alias it ships as, e.g. sd-route-135m."),
    title: str = typer.Option(..., help="One line for `divcon models`, e.g. 'SmolLM2-135M SD-route decomposer "
                                        "(GSM8K)'."),
    evidence: str = typer.Option(..., help="Why this student: the report (and row) that made it the best one."),
    default_for: list[str] = typer.Option([], help="A task family (math | reading | openqa) whose default decomposer "
                                                   "it becomes: only where it was at least as good as the teacher's "
                                                   "on Table 1 (repeatable; needs --student-run and --teacher-run)."),
    student_run: Optional[Path] = typer.Option(None, help="With --default-for: the run this student decomposed "
                                                          "(e.g. reports/table1/runs/gsm8k/SD-route-T)."),
    teacher_run: Optional[Path] = typer.Option(None, help="With --default-for: the teacher decomposer's run on the "
                                                          "same questions with the same solver (e.g. .../gsm8k/T-T); "
                                                          "the student must be at least as good, paired."),
) -> None:
    """Ship a student inside divcon: its adapter goes into the package data, pinned by digest, with a training card;
    `llamacpp:<alias>` (or the bare alias) then runs it offline on its embedded base."""
    from divcon.distill.ship import ship as ship_student

    try:
        if (student_run is None) != (teacher_run is None):
            fail("--student-run and --teacher-run go together")
        gate = (student_run, teacher_run) if student_run and teacher_run else None
        entry = ship_student(adapter, alias, title, evidence, default_for=tuple(default_for), gate_runs=gate)
    except (ValueError, OSError) as e:
        fail(str(e))
    console.print(f"shipped {alias}: {entry['base']} + LoRA {entry['digest'][:12]} "
                  f"({entry['card'].get('steps', '?')} steps, commit {str(entry['card'].get('commit'))[:12]}); "
                  f"use it as --decomposer {alias}")
