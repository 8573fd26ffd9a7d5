"""Terminal output shared by every command: results on stdout, everything else (progress, warnings, errors) on
stderr, so ``divcon eval ... > out.txt`` captures only the results and a failing command's one-line reason is
where scripts look for it. Its own module so the main CLI and the sub-CLIs (distill, experiment) import it rather
than each other."""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, NoReturn, Optional

import typer
from typer.core import TyperGroup
from typer.exceptions import Abort, TyperException
from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TaskID, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)
from rich.text import Text

console = Console()  # results
err_console = Console(stderr=True)  # progress, warnings, errors

WIDE = 120  # columns below which (or off a terminal) tables become "key: value" lines


def fail(msg: str) -> NoReturn:
    """One line on stderr and exit status 2: what a person (or a script) needs, never a traceback."""
    err_console.print(f"[red]error:[/red] {msg}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


class OneLineErrors(TyperGroup):
    """The root command group: a usage error (``--limit -1``, an unknown option) is one ``error:`` line on stderr
    with exit status 2, like every other error, instead of click's usage text and a boxed message that wraps at 80
    columns."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        try:
            rv = super().main(*args, standalone_mode=False, **kwargs)
        except TyperException as e:  # typer's (vendored click's) usage errors
            message = e.format_message() if hasattr(e, "format_message") else str(e)
            err_console.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
            if not standalone_mode:
                raise
            sys.exit(getattr(e, "exit_code", 2))
        except Abort:
            if not standalone_mode:
                raise
            sys.exit(130)
        if not standalone_mode:
            return rv
        sys.exit(rv if isinstance(rv, int) else 0)  # an int here is the status of a typer.Exit


class _StderrHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        err_console.print(f"[yellow]warning:[/yellow] {record.getMessage()}", highlight=False, soft_wrap=True)


def setup_logging() -> None:
    """divcon's warnings (a bad record line kept aside, an unpriced model) go to stderr, once per message."""
    logger = logging.getLogger("divcon")
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        logger.addHandler(_StderrHandler())
    logger.setLevel(logging.WARNING)
    logger.propagate = False


def set_data_dir(data_dir: Optional[Path]) -> None:
    if data_dir is not None:
        os.environ["DIVCON_DATA"] = str(data_dir)


def wide() -> bool:
    """Whether stdout can show a wide table: a terminal of at least WIDE columns."""
    return console.is_terminal and console.width >= WIDE


class _Field(ProgressColumn):
    """A task field shown as text, blank until the runner sets it."""

    def __init__(self, name: str):
        super().__init__()
        self.name = name

    def render(self, task: Task) -> Text:
        return Text(str(task.fields.get(self.name, "")))


def progress_bar() -> Progress:
    """A bar on stderr with the running metric and questions per hour (the throughput a long run is judged by).
    Off a terminal (a log file, CI) it is off: rich would only print its last frame, in the way of the result."""
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), _Field("status"),
                    _Field("rate"), TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), console=err_console,
                    disable=not err_console.is_terminal)


def progress_callback(bar: Progress, bar_id: TaskID, label: str,
                      value: Callable[[dict], float]) -> Callable[[int, int, dict | None], None]:
    """An ``on_progress(k, total, record)`` for the runners: advances the bar and shows the running mean of
    ``value(record)`` (accuracy so far), so a long run tells early whether it is going anywhere. Error records
    (examples that could not be run) count as 0 and are tallied separately."""
    tally = {"n": 0, "sum": 0.0, "errors": 0}
    start = time.monotonic()

    def on_progress(k: int, total: int, rec: dict | None) -> None:
        bar.update(bar_id, total=total, advance=k)
        if rec:
            tally["n"] += 1
            tally["sum"] += value(rec)
            tally["errors"] += bool(rec.get("error"))
            errors = f", {tally['errors']} errors" if tally["errors"] else ""
            elapsed = time.monotonic() - start
            rate = f"{tally['n'] / elapsed * 3600:.0f} q/h" if elapsed > 0 else ""
            bar.update(bar_id, status=f"{label} {tally['sum'] / tally['n']:.3f}{errors}", rate=rate)

    return on_progress


SHOTS_HELP = ("Worked examples before the question in the solver's prompts (default: the task family's tuned "
              "setting: math 0, reading 2).")
DECOMPOSE_SHOTS_HELP = ("Worked examples in the decomposer's prompt (0 for a trained student; default: the task "
                        "family's tuned setting: math 0, reading 2).")
STYLE_HELP = ("How the solver uses the subquestions: working | short | plan (default: the task family's tuned "
              "setting: math plan, reading working).")
DECOMPOSE_STYLE_HELP = ("plain | computed (each subquestion must ask for a value to calculate; default: the tuned "
                        "setting).")


def prompt_options(shots: int | None, decompose_shots: int | None, solve_style: str | None,
                   decompose_style: str | None = None) -> dict:
    """The prompt settings given on the command line; the rest keep PipelineConfig's (tuned) defaults."""
    given = {"shots": shots, "decompose_shots": decompose_shots, "solve_style": solve_style,
             "decompose_style": decompose_style}
    return {k: v for k, v in given.items() if v is not None}
