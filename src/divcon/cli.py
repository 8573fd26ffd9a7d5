"""The ``divcon`` command line: solve one question, evaluate a pipeline on a task, distill, run experiment grids,
and report. Long work shows a rich progress bar; every command is resumable through run dirs and the call cache."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from divcon.backends.registry import DEFAULT_TEACHER
from divcon.console import (DECOMPOSE_SHOTS_HELP, DECOMPOSE_STYLE_HELP, SHOTS_HELP, STYLE_HELP, OneLineErrors,
                            console, fail, progress_bar, progress_callback, prompt_options, set_data_dir,
                            setup_logging, wide)

app = typer.Typer(help="divcon: decompose with a small distilled model, solve with a big one; measure what it saves.",
                  no_args_is_help=True, pretty_exceptions_show_locals=False, cls=OneLineErrors)
TEACHER = f"llamacpp:{DEFAULT_TEACHER}"

# What a command turns into one line on stderr and exit status 2: bad input, a model that cannot be found, loaded
# or reached (BackendUnavailable is a RuntimeError), a run dir in use or holding another run, unreadable files.
USER_ERRORS = (ValueError, RuntimeError, OSError)


@app.callback()
def _main() -> None:
    setup_logging()


def read_context(path: Optional[Path]) -> Optional[str]:
    """The passage file of --context as text, or a one-line error (missing, a folder, not UTF-8)."""
    if path is None:
        return None
    if not path.exists():
        fail(f"context file not found: {path}")
    if not path.is_file():
        fail(f"context is not a file: {path}")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        fail(f"context file {path} is not UTF-8 text (byte {e.start}: {e.reason})")
    except OSError as e:
        fail(f"cannot read context file {path}: {e.strerror}")


MODE_HELP = "direct | cot | two-stage | dynamic | auto (ask the decomposer first whether to decompose)"


@app.command()
def solve(
    question: str = typer.Argument(..., help="The question to answer."),
    context: Optional[Path] = typer.Option(None, help="A file with a passage the question is about."),
    mode: str = typer.Option("two-stage", help=MODE_HELP),
    decomposer: Optional[str] = typer.Option(None, help="Model spec of the decomposer (default: the student "
                                                        "shipped as the family's default decomposer, see `divcon "
                                                        "models`, else the teacher)."),
    solver: str = typer.Option(TEACHER, help="Model spec of the solver."),
    family: str = typer.Option("", help="Prompt family: math | reading | openqa (default: reading with context, "
                                        "else math)."),
    max_subquestions: int = typer.Option(4, min=1, max=16),
    shots: Optional[int] = typer.Option(None, min=0, help=SHOTS_HELP),
    decompose_shots: Optional[int] = typer.Option(None, min=0, help=DECOMPOSE_SHOTS_HELP),
    solve_style: Optional[str] = typer.Option(None, help=STYLE_HELP),
    decompose_style: Optional[str] = typer.Option(None, help=DECOMPOSE_STYLE_HELP),
    solve_tokens: int = typer.Option(512, min=1, help="Max new tokens of the solver's generation."),
    decompose_tokens: int = typer.Option(192, min=1, help="Max new tokens of the decomposer's generation."),
) -> None:
    """Answer one question and show subquestions, answer and cost."""
    from divcon.backends import load_backend
    from divcon.backends.registry import default_decomposer
    from divcon.cost import price_of
    from divcon.pipeline import STAGED_MODES, Pipeline, PipelineConfig
    from divcon.tasks.answers import extract_math, extract_text
    from divcon.tasks.base import FAMILIES, Example

    if not question.strip():
        fail("the question is empty")
    ctx = read_context(context)
    family = family or ("reading" if ctx else "math")
    if family not in FAMILIES:
        fail(f"unknown family {family!r}; families: {', '.join(FAMILIES)}")
    decomposer = decomposer or default_decomposer(family)
    try:
        pcfg = PipelineConfig(mode=mode, max_subquestions=max_subquestions, solve_tokens=solve_tokens,
                              decompose_tokens=decompose_tokens,
                              **prompt_options(shots, decompose_shots, solve_style, decompose_style))
        pipe = Pipeline(pcfg, solver=load_backend(solver), decomposer=load_backend(decomposer))
        res = pipe.run([Example("cli", question, [], context=ctx)], family)[0]
    except USER_ERRORS as e:
        fail(str(e))
    answer, _ = (extract_math if family == "math" else extract_text)(res.final_output)
    if res.subquestions:
        console.print("[bold]Subquestions[/bold]")
        for i, q in enumerate(res.subquestions, 1):
            console.print(f"  {i}. {q}")
    elif mode in STAGED_MODES:
        console.print("[bold]Subquestions[/bold]: none (the decomposer saw no need)")
    console.print(f"[bold]Solution[/bold]\n{res.final_output.strip()}")
    console.print(f"[bold]Answer[/bold]: {answer if answer is not None else '(no answer found)'}")
    t = Table("stage", "model", "tokens in", "tokens out", "seconds", "$")
    for u in res.usage:
        price = price_of(u.model)
        t.add_row(u.stage, u.model, str(u.tokens_in), str(u.tokens_out), f"{u.seconds:.1f}",
                  "unpriced" if price.source == "unpriced" else f"{price.dollars(u.tokens_in, u.tokens_out):.6f}")
    console.print(t)


def money(dollars: float | None) -> str:
    """Dollars for people: 'unpriced' when a model has no price, never a made-up 0."""
    return "unpriced" if dollars is None else f"{dollars:.5f}"


def summary_rows(s: dict) -> list[tuple[str, str]]:
    """One summary as (key, value) pairs: the same content for the wide table and the narrow key: value layout."""
    primary = s["primary"]
    extra = ", ".join(f"{k} {v:.3f}" for k, v in s["metrics"].items() if k != primary)
    rows = [("task", s["task"]), ("mode", s["mode"]), ("decomposer", str(s["decomposer"] or "-")),
            ("solver", s["solver"]), ("n", str(s["n"])), ("errors", str(s.get("errors", 0))),
            ("metric", f"{primary} {s['metrics'].get(primary, 0):.3f}" + (f" ({extra})" if extra else "")),
            ("tokens in", str(s["tokens_in"])), ("tokens out", str(s["tokens_out"])),
            ("big-model $", money(s["big_model_dollars"])), ("total $", money(s["dollars"])),
            ("s/question", f"{s['wall_seconds'] / max(s['n'], 1):.1f}"),
            ("questions/hour", f"{s['questions_per_hour']:.0f}" if s.get("questions_per_hour") else "-")]
    if s["mode"] == "two-stage":
        rows.append(("subq/q (none)", f"{s['mean_subquestions']:.2f} ({s['no_subquestions']})"))
    return rows


def print_summaries(summaries: list[dict]) -> None:
    """A table on a wide terminal; elsewhere (a pipe, a file, 80 columns) 'key: value' lines, which a table
    squeezed to fit would turn into '0.…'."""
    if wide():
        t = Table(*(k for k, _ in summary_rows(summaries[0])))
        for s in summaries:
            t.add_row(*(v for _, v in summary_rows(s)))
        console.print(t)
        return
    for s in summaries:
        for k, v in summary_rows(s):
            console.print(f"{k}: {v}", highlight=False, soft_wrap=True)


@app.command("eval")
def eval_cmd(
    task: str = typer.Option("gsm8k", help="Task name (see `divcon tasks`)."),
    split: Optional[str] = typer.Option(None, help="Split (default: the task's evaluation split)."),
    limit: Optional[int] = typer.Option(None, min=1, help="First N examples of the split."),
    offset: int = typer.Option(0, min=0),
    shuffle_seed: Optional[int] = typer.Option(None, min=0, help="Seeded random subset instead of the first N."),
    mode: str = typer.Option("two-stage", help=MODE_HELP),
    decomposer: str = typer.Option(TEACHER),
    solver: str = typer.Option(TEACHER),
    max_subquestions: int = typer.Option(4, min=1, max=16),
    shots: Optional[int] = typer.Option(None, min=0, help=SHOTS_HELP),
    decompose_shots: Optional[int] = typer.Option(None, min=0, help=DECOMPOSE_SHOTS_HELP),
    solve_style: Optional[str] = typer.Option(None, help=STYLE_HELP),
    decompose_style: Optional[str] = typer.Option(None, help=DECOMPOSE_STYLE_HELP),
    solve_tokens: int = typer.Option(512, min=1, help="Max new tokens of the solver's generation."),
    decompose_tokens: int = typer.Option(192, min=1, help="Max new tokens of the decomposer's generation."),
    out: Optional[Path] = typer.Option(None, help="Run directory (default runs/<derived name>)."),
    concurrency: Optional[int] = typer.Option(None, min=1, help="Questions in flight at once (default: what the "
                                                               "backends serve at once)."),
    data_dir: Optional[Path] = typer.Option(None, help="Folder of the data sets (default ../shared/data)."),
) -> None:
    """Evaluate a pipeline on a task. Writes records.jsonl + summary.json; re-run the same command to resume."""
    from divcon.evaluate import evaluate
    from divcon.pipeline import PipelineConfig
    from divcon.tasks import get_task

    set_data_dir(data_dir)
    try:
        pcfg = PipelineConfig(mode=mode, max_subquestions=max_subquestions, solve_tokens=solve_tokens,
                              decompose_tokens=decompose_tokens,
                              **prompt_options(shots, decompose_shots, solve_style, decompose_style))
        primary = get_task(task).primary
        with progress_bar() as bar:
            bar_id = bar.add_task(f"{task} {mode}", total=None, status="")
            on_progress = progress_callback(bar, bar_id, primary, lambda rec: rec["metrics"].get(primary, 0.0))
            run_dir, summary = evaluate(task, solver=solver, decomposer=decomposer, pcfg=pcfg, split=split,
                                        limit=limit, offset=offset, shuffle_seed=shuffle_seed, out=out,
                                        concurrency=concurrency, on_progress=on_progress)
    except USER_ERRORS as e:
        fail(str(e))
    print_summaries([summary])
    console.print(f"run dir: {run_dir}", highlight=False, soft_wrap=True)


@app.command()
def models() -> None:
    """The embedded model aliases (base models, then the students shipped with divcon), whether they are installed,
    and their relative price."""
    from divcon.backends.registry import EMBEDDED, installed_aliases, students
    from divcon.cost import price_of

    have = set(installed_aliases())
    t = Table("alias", "model", "params (B)", "installed", "$/1K in", "$/1K out")
    for a, m in EMBEDDED.items():
        p = price_of(f"llamacpp:{a}")
        t.add_row(a, m.title, f"{m.params_b}", "yes" if a in have else "no", f"{p.in_per_1k:.2e}",
                  f"{p.out_per_1k:.2e}")
    for a, s in students().items():  # a LoRA on an embedded base: priced, and installed, as that base
        p = price_of(f"llamacpp:{s.base}")
        default = f"; default decomposer for {', '.join(s.default_for)}" if s.default_for else ""
        t.add_row(a, f"{s.title} (LoRA on {s.base}{default})", f"{EMBEDDED[s.base].params_b}",
                  "yes" if s.base in have else "no", f"{p.in_per_1k:.2e}", f"{p.out_per_1k:.2e}")
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
def calls(limit: int = typer.Option(10, min=1), model: Optional[str] = typer.Option(None)) -> None:
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


from divcon.experiments.cli import claims, experiment, report  # noqa: E402  (registered below, on app)

app.command("experiment")(experiment)
app.command("report")(report)
app.command("claims")(claims)


from divcon.distill.cli import app as distill_app  # noqa: E402  (a sub-app; imports nothing heavy)

app.add_typer(distill_app, name="distill")


from divcon.serve.cli import serve  # noqa: E402  (imports nothing heavy: FastAPI loads when it serves)

app.command("serve")(serve)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
