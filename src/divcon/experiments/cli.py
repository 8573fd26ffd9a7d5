"""``divcon experiment`` (run a YAML grid), ``divcon report`` (tables, plot and notes from run dirs) and ``divcon
claims`` (the paper's claims with verdicts from run dirs).

Registered on the main app by :mod:`divcon.cli`; terminal output comes from :mod:`divcon.console`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

import typer
from rich.table import Table

from divcon.console import console, fail, progress_bar, set_data_dir
from divcon.runner import StopWhen
from divcon.experiments.grid import (Cell, CellStatus, GridError, file_status, grid_baselines, load_grid,
                                     read_grid_json, run_grid, run_round_robin, short_name, write_grid_json)


def _cells_table(cells: list[Cell], statuses: list[CellStatus], out: Path,
                 chosen: Callable[[Cell], bool]) -> Table:
    t = Table("task", "label", "mode", "decomposer", "solver", "n", "done", "status",
              title=f"grid dir {out} (runs in <task>/<label>/)")
    for c, s in zip(cells, statuses):
        status = s.status if chosen(c) else f"{s.status} (not selected)"
        t.add_row(c.task, c.label, c.mode, short_name(c.decomposer), short_name(c.solver), str(s.n), str(s.done),
                  status + (f": {s.reason}" if s.reason else ""))
    return t


def experiment(
    config: Path = typer.Argument(..., help="Grid config (YAML): tasks, model aliases, cells."),
    out: Optional[Path] = typer.Option(None, help="Grid dir (default: the config's 'out', else "
                                                  "runs/experiments/<config name>)."),
    only_task: Optional[str] = typer.Option(None, help="Run only the cells of this task."),
    only_label: Optional[list[str]] = typer.Option(None, help="Run only the cells with this label; repeat for "
                                                              "several (a stage of a long grid: the rows an issue "
                                                              "needs first)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="List the cells, sizes and statuses; run nothing."),
    data_dir: Optional[Path] = typer.Option(None, help="Folder of the data sets (default ../shared/data)."),
    stop_after: Optional[float] = typer.Option(None, min=0.0, help="Minutes; then start no new question, finish "
                                                                   "those in flight (re-run to continue)."),
    concurrency: Optional[int] = typer.Option(None, min=1, help="Questions in flight per cell (default: the "
                                                               "config's 'concurrency', else what the backends "
                                                               "serve at once)."),
    chunk: Optional[int] = typer.Option(None, min=1, help="Round-robin: raise every cell by this many questions per "
                                                         "round, so a run stopped early leaves the cells at about "
                                                         "the same n (default: one cell after another)."),
    up_to: Optional[int] = typer.Option(None, min=1, help="Round-robin only: raise no cell above this many "
                                                          "questions in this run (a stage; the config's limits stay "
                                                          "the goal); exit 0 once every cell has them."),
) -> None:
    """Run an experiment grid, task by task, into <out>/<task>/<label>/ with grid.json; re-run to resume."""
    from divcon.tasks import get_task

    set_data_dir(data_dir)
    if not config.exists():
        fail(f"config not found: {config}")
    try:
        grid = load_grid(config)
    except (GridError, ValueError) as e:
        fail(str(e))
    out = out or grid.out or Path("runs/experiments") / config.stem
    if only_task is not None and only_task not in {c.task for c in grid.cells}:
        fail(f"no cell runs on task {only_task!r}; tasks: {', '.join(sorted({c.task for c in grid.cells}))}")
    labels = sorted({c.label for c in grid.cells})
    if only_label and (unknown := [lab for lab in only_label if lab not in labels]):
        fail(f"no cell is labelled {', '.join(map(repr, unknown))}; labels: {', '.join(labels)}")

    def chosen(c: Cell) -> bool:
        return only_task in (None, c.task) and (not only_label or c.label in only_label)

    if up_to is not None and not chunk:
        fail("--up-to stages a round-robin run: give --chunk too")
    statuses = [file_status(c, out) for c in grid.cells]
    if dry_run:
        console.print(_cells_table(grid.cells, statuses, out, chosen))
        return
    runnable = [(c, s) for c, s in zip(grid.cells, statuses) if s.status not in ("skipped", "failed") and chosen(c)]
    running = {"n": 0, "sum": 0.0}

    with progress_bar() as bar:
        bar_id = bar.add_task(f"grid {config.stem}", total=sum(s.n for _, s in runnable), status="")

        def on_cell_start(cell: Cell) -> None:
            running.update(n=0, sum=0.0)
            bar.update(bar_id, status=f"{cell.task} {cell.label}")

        def on_progress(cell: Cell, k: int, total: int, rec: dict | None) -> None:
            bar.update(bar_id, advance=k)
            if rec:
                primary = get_task(cell.task).primary
                running["n"] += 1
                running["sum"] += rec["metrics"].get(primary, 0.0)
                bar.update(bar_id, status=f"{cell.task} {cell.label}: {primary} {running['sum'] / running['n']:.3f}")

        if chunk:
            cells = [c for c, _ in runnable]

            def on_chunk(cell: Cell, summary: dict) -> None:
                primary = summary["primary"]
                bar.update(bar_id, completed=sum(file_status(c, out).done for c in cells),
                           status=f"{cell.task} {cell.label}: n={summary['n']} {primary} "
                                  f"{summary['metrics'][primary]:.3f}")

            write_grid_json(out, grid, statuses, config)
            bar.update(bar_id, completed=sum(s.done for _, s in runnable))
            try:
                run_round_robin(cells, out, chunk, StopWhen.after_minutes(stop_after).deadline,
                                concurrency or grid.concurrency, on_chunk, up_to)
            except (ValueError, RuntimeError, OSError) as e:  # a run dir holding another config, a missing model
                fail(f"{type(e).__name__}: {e}")
            finally:
                statuses = [file_status(c, out) for c in grid.cells]
                write_grid_json(out, grid, statuses, config)
        else:
            statuses = run_grid(grid, out, statuses, config_path=config, only=chosen,
                                on_progress=on_progress, on_cell_start=on_cell_start,
                                stop=StopWhen.after_minutes(stop_after), concurrency=concurrency)
    console.print(_cells_table(grid.cells, statuses, out, chosen))
    unfinished = [s for c, s in zip(grid.cells, statuses)
                  if s.status in ("partial", "pending") and chosen(c)
                  and (up_to is None or s.done < min(s.n, up_to))]
    if unfinished and stop_after is not None:
        console.print(f"stopped at the time limit with {len(unfinished)} cell(s) unfinished; "
                      "re-run the same command to continue")
    console.print(f"grid dir: {out}  (report: divcon report {out} --out {out / 'report'})")
    if any(s.status == "failed" for c, s in zip(grid.cells, statuses) if chosen(c)):
        raise typer.Exit(1)
    if unfinished and stop_after is not None:  # 3, as `divcon distill train`: a script can tell "resume" from "done"
        raise typer.Exit(3)


def expand_run_dirs(paths: list[Path]) -> tuple[list[Path], str | None, list[str]]:
    """Run dirs from arguments, and the first grid's title and baseline labels: a dir with config.json is a run dir;
    a dir with grid.json stands for its cells' run dirs (those started, in grid order)."""
    dirs: list[Path] = []
    titles: list[str] = []
    baselines: list[list[str]] = []
    for p in paths:
        if (p / "config.json").exists():
            dirs.append(p)
        elif (p / "grid.json").exists():
            grid = read_grid_json(p)
            titles += [grid["title"]] if grid.get("title") else []
            baselines += [grid_baselines(grid)] if grid_baselines(grid) else []
            dirs += [Path(e["run_dir"]) for e in grid["cells"] if (Path(e["run_dir"]) / "config.json").exists()]
        else:
            raise ValueError(f"{p} is neither a run dir (config.json) nor a grid dir (grid.json)")
    return dirs, (titles[0] if titles else None), (baselines[0] if baselines else [])


def report(
    paths: list[Path] = typer.Argument(..., help="Run dirs and/or grid dirs."),
    out: Path = typer.Option(..., help="Folder for report.md, report.html, quality_vs_cost.png, report.json."),
    title: Optional[str] = typer.Option(None, help="Report title (default: the first grid's title)."),
    baseline: Optional[list[str]] = typer.Option(None, help="Label of a row every row is paired with, per task; "
                                                            "repeat for several (default: the first grid's "
                                                            "'baseline')."),
) -> None:
    """Build a report (tables with 95% CIs, tokens, $; quality-vs-cost plot) from run files alone."""
    from divcon.experiments.report import build_report

    try:
        dirs, grid_title, grid_baselines = expand_run_dirs(paths)
        if not dirs:
            fail("no run dir with a config.json among the arguments")
        build_report(dirs, out, title or grid_title or "divcon report", baseline or grid_baselines)
    except ValueError as e:
        fail(str(e))
    console.print(f"report: {out / 'report.md'}, {out / 'report.html'}, {out / 'quality_vs_cost.png'}, "
                  f"{out / 'report.json'}")


def claims(
    claims_file: Path = typer.Argument(Path("configs/claims.yaml"), help="The claims and the run dirs testing them."),
    out: Path = typer.Option(Path("reports/README.md"), help="The one-page verdicts (markdown)."),
) -> None:
    """The paper's claims with a verdict each (holds / does not hold / undecided), from paired intervals on run
    files; run dirs are named relative to the current directory (the repository root)."""
    from divcon.experiments.claims import write_claims

    try:
        path = write_claims(claims_file, out)
    except (ValueError, KeyError, TypeError, OSError) as e:
        fail(f"{claims_file}: {e}")
    console.print(f"claims: {path}")
