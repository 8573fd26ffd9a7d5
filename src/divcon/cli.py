"""The ``divcon`` command line: solve one question, evaluate a pipeline on a task, distill, run experiment grids,
and report. Long work shows a rich progress bar; every command is resumable through run dirs and the call cache."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable, Optional

import typer
from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)
from rich.table import Table

from divcon.backends.registry import DEFAULT_TEACHER

app = typer.Typer(help="divcon: decompose with a small distilled model, solve with a big one; measure what it saves.",
                  no_args_is_help=True, pretty_exceptions_show_locals=False)
console = Console()
TEACHER = f"llamacpp:{DEFAULT_TEACHER}"


def progress_bar() -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[status]}"), TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                    console=console)


def progress_callback(bar: Progress, bar_id: TaskID, label: str,
                      value: Callable[[dict], float]) -> Callable[[int, int, dict | None], None]:
    """An ``on_progress(k, total, record)`` for the runners: advances the bar and shows the running mean of
    ``value(record)`` (accuracy so far), so a long run tells early whether it is going anywhere."""
    tally = {"n": 0, "sum": 0.0}

    def on_progress(k: int, total: int, rec: dict | None) -> None:
        bar.update(bar_id, total=total, advance=k)
        if rec:
            tally["n"] += 1
            tally["sum"] += value(rec)
            bar.update(bar_id, status=f"{label} {tally['sum'] / tally['n']:.3f}")

    return on_progress


def _set_data_dir(data_dir: Optional[Path]) -> None:
    if data_dir is not None:
        os.environ["DIVCON_DATA"] = str(data_dir)


def _fail(msg: str) -> None:
    console.print(f"[red]error:[/red] {msg}")
    raise typer.Exit(2)


MODE_HELP = "direct | cot | two-stage | dynamic"


@app.command()
def solve(
    question: str = typer.Argument(..., help="The question to answer."),
    context: Optional[Path] = typer.Option(None, help="A file with a passage the question is about."),
    mode: str = typer.Option("two-stage", help=MODE_HELP),
    decomposer: str = typer.Option(TEACHER, help="Model spec of the decomposer."),
    solver: str = typer.Option(TEACHER, help="Model spec of the solver."),
    family: str = typer.Option("", help="Prompt family: math | reading | openqa (default: reading with context, "
                                        "else math)."),
    max_subquestions: int = typer.Option(4),
    solve_tokens: int = typer.Option(512, help="Max new tokens of the solver's generation."),
    decompose_tokens: int = typer.Option(192, help="Max new tokens of the decomposer's generation."),
) -> None:
    """Answer one question and show subquestions, answer and cost."""
    from divcon.backends import load_backend
    from divcon.cost import price_of
    from divcon.pipeline import Pipeline, PipelineConfig
    from divcon.tasks.answers import extract_math, extract_text
    from divcon.tasks.base import Example

    if not question.strip():
        _fail("the question is empty")
    if context is not None and not context.exists():
        _fail(f"context file not found: {context}")
    ctx = context.read_text(encoding="utf-8") if context else None
    family = family or ("reading" if ctx else "math")
    try:
        pcfg = PipelineConfig(mode=mode, max_subquestions=max_subquestions, solve_tokens=solve_tokens,
                              decompose_tokens=decompose_tokens)
        pipe = Pipeline(pcfg, solver=load_backend(solver), decomposer=load_backend(decomposer))
        res = pipe.run([Example("cli", question, [], context=ctx)], family)[0]
    except (ValueError, RuntimeError, FileNotFoundError) as e:
        _fail(str(e))
    answer, _ = (extract_math if family == "math" else extract_text)(res.final_output)
    if res.subquestions:
        console.print("[bold]Subquestions[/bold]")
        for i, q in enumerate(res.subquestions, 1):
            console.print(f"  {i}. {q}")
    elif mode in ("two-stage", "dynamic"):
        console.print("[bold]Subquestions[/bold]: none (the decomposer saw no need)")
    console.print(f"[bold]Solution[/bold]\n{res.final_output.strip()}")
    console.print(f"[bold]Answer[/bold]: {answer if answer is not None else '(no answer found)'}")
    t = Table("stage", "model", "tokens in", "tokens out", "seconds", "$")
    for u in res.usage:
        t.add_row(u.stage, u.model, str(u.tokens_in), str(u.tokens_out), f"{u.seconds:.1f}",
                  f"{price_of(u.model).dollars(u.tokens_in, u.tokens_out):.6f}")
    console.print(t)


def summary_table(summaries: list[dict]) -> Table:
    t = Table("task", "mode", "decomposer", "solver", "n", "metric", "tokens in", "tokens out", "big-model $",
              "total $", "s/question", "subq/q (none)")
    for s in summaries:
        primary = s["primary"]
        extra = ", ".join(f"{k} {v:.3f}" for k, v in s["metrics"].items() if k != primary)
        t.add_row(s["task"], s["mode"], str(s["decomposer"] or "-"), s["solver"], str(s["n"]),
                  f"{primary} {s['metrics'].get(primary, 0):.3f}" + (f" ({extra})" if extra else ""),
                  str(s["tokens_in"]), str(s["tokens_out"]), f"{s['big_model_dollars']:.5f}", f"{s['dollars']:.5f}",
                  f"{s['wall_seconds'] / max(s['n'], 1):.1f}",
                  f"{s['mean_subquestions']:.2f} ({s['no_subquestions']})" if s["mode"] == "two-stage" else "-")
    return t


@app.command("eval")
def eval_cmd(
    task: str = typer.Option("gsm8k", help="Task name (see `divcon tasks`)."),
    split: Optional[str] = typer.Option(None, help="Split (default: the task's evaluation split)."),
    limit: Optional[int] = typer.Option(None, help="First N examples of the split."),
    offset: int = typer.Option(0),
    shuffle_seed: Optional[int] = typer.Option(None, help="Seeded random subset instead of the first N."),
    mode: str = typer.Option("two-stage", help=MODE_HELP),
    decomposer: str = typer.Option(TEACHER),
    solver: str = typer.Option(TEACHER),
    max_subquestions: int = typer.Option(4),
    solve_tokens: int = typer.Option(512, help="Max new tokens of the solver's generation."),
    decompose_tokens: int = typer.Option(192, help="Max new tokens of the decomposer's generation."),
    out: Optional[Path] = typer.Option(None, help="Run directory (default runs/<derived name>)."),
    batch_size: int = typer.Option(1, help="Examples per backend call batch (raise it for API servers)."),
    data_dir: Optional[Path] = typer.Option(None, help="Folder of the data sets (default ../shared/data)."),
) -> None:
    """Evaluate a pipeline on a task. Writes records.jsonl + summary.json; re-run the same command to resume."""
    from divcon.evaluate import evaluate
    from divcon.pipeline import PipelineConfig
    from divcon.tasks import get_task

    _set_data_dir(data_dir)
    try:
        pcfg = PipelineConfig(mode=mode, max_subquestions=max_subquestions, solve_tokens=solve_tokens,
                              decompose_tokens=decompose_tokens)
        primary = get_task(task).primary
        with progress_bar() as bar:
            bar_id = bar.add_task(f"{task} {mode}", total=None, status="")
            on_progress = progress_callback(bar, bar_id, primary, lambda rec: rec["metrics"].get(primary, 0.0))
            run_dir, summary = evaluate(task, solver=solver, decomposer=decomposer, pcfg=pcfg, split=split,
                                        limit=limit, offset=offset, shuffle_seed=shuffle_seed, out=out,
                                        batch_size=batch_size, on_progress=on_progress)
    except (ValueError, RuntimeError, FileNotFoundError) as e:
        _fail(str(e))
    console.print(summary_table([summary]))
    console.print(f"run dir: {run_dir}")


@app.command()
def models() -> None:
    """The embedded model aliases, whether their packages are installed, and their relative price."""
    from divcon.backends.registry import EMBEDDED, installed_aliases
    from divcon.cost import price_of

    have = set(installed_aliases())
    t = Table("alias", "model", "params (B)", "installed", "$/1K in", "$/1K out")
    for a, m in EMBEDDED.items():
        p = price_of(f"llamacpp:{a}")
        t.add_row(a, m.title, f"{m.params_b}", "yes" if a in have else "no", f"{p.in_per_1k:.2e}",
                  f"{p.out_per_1k:.2e}")
    console.print(t)


@app.command()
def tasks() -> None:
    """The tasks, their prompt family, splits and metric."""
    from divcon.tasks import TASKS

    t = Table("task", "family", "splits", "default", "metric", "about")
    for name, task in TASKS.items():
        t.add_row(name, task.family, ", ".join(task.splits), task.default_split, task.primary, task.description)
    console.print(t)


@app.command()
def calls(limit: int = typer.Option(10), model: Optional[str] = typer.Option(None)) -> None:
    """The most recent model calls from the SQLite call log."""
    from divcon.backends import default_log

    db = default_log().db
    q = "SELECT ts, model, tokens_in, tokens_out, seconds, hits, substr(output, 1, 80) FROM calls"
    args: tuple = ()
    if model:
        q += " WHERE model=?"
        args = (model,)
    t = Table("model", "in", "out", "s", "cache hits", "output")
    for row in db.execute(q + " ORDER BY id DESC LIMIT ?", (*args, limit)):
        t.add_row(row[1], str(row[2]), str(row[3]), f"{row[4]:.1f}", str(row[5]), json.dumps(row[6]))
    console.print(t)


from divcon.experiments.cli import experiment, report  # noqa: E402  (registered below, on app)

app.command("experiment")(experiment)
app.command("report")(report)


from divcon.distill.cli import app as distill_app  # noqa: E402  (a sub-app; imports nothing heavy)

app.add_typer(distill_app, name="distill")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
