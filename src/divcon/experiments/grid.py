"""Experiment grids: a YAML file names tasks, model aliases and cells (mode, decomposer, solver); every (task, cell)
pair becomes one run dir under ``<out>/<task>/<slug(label)>/``, evaluated with :func:`divcon.evaluate.evaluate`.

Why a grid rather than a shell loop of ``divcon eval``: one progress view for the whole table, one ``grid.json`` that
tells the report which label each run dir belongs to, cells whose trained student is missing are skipped with the
reason instead of crashing the night's run, and runs go task-major so a grid stopped half-way already holds complete
rows for the first tasks. Shared stages cost nothing twice: T/T and T/S send the same decomposer prompt, which the
SQLite call cache answers once on one machine; a cell that names another's ``decompositions`` takes them from that
cell's run files, on any machine (:mod:`divcon.pipeline.borrowed`).

Compact config form::

    limit: 30                      # default for every task (int), overridable per task
    split: null                    # null: the task's evaluation split
    shuffle_seed: null
    concurrency: null               # questions in flight per cell (null: what the backends serve at once)
    baseline: [T/T, T (single)]     # the report adds each cell's paired difference to these cells (same questions)
    pipeline: {max_subquestions: 4} # PipelineConfig defaults for every cell
    models: {T: "llamacpp:qwen2.5-1.5b", S: "llamacpp:smollm2-135m"}
    tasks: [gsm8k, {drop: {limit: 20}}, bamboogle]
    cells:
      - {label: T (single), mode: cot, solver: T}
      - {label: T/S, mode: two-stage, decomposer: T, solver: S}
      - {label: SD-R/T, mode: two-stage, decomposer: SDR, solver: T, requires: runs/distill/x/adapter,
         tasks: [gsm8k]}
      - {label: SD-R/S, mode: two-stage, decomposer: SDR, solver: S, requires: runs/distill/x/adapter,
         tasks: [gsm8k], decompositions: SD-R/T}   # SD-R/T's subquestions, not the decomposer's once more
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from divcon.pipeline import MODES, STAGED_MODES, PipelineConfig
from divcon.runner import StopWhen
from divcon.runs import read_records, write_json

TOP_KEYS = {"limit", "split", "shuffle_seed", "concurrency", "pipeline", "models", "tasks", "cells", "out", "title",
            "baseline"}
TASK_KEYS = {"limit", "split", "shuffle_seed"}
CELL_KEYS = {"label", "mode", "decomposer", "solver", "tasks", "requires", "pipeline", "decompositions"}


class GridError(ValueError):
    """The grid config is malformed; the message says where."""


@dataclass(frozen=True)
class Cell:
    """One run of the grid: a pipeline (mode, decomposer, solver) on a slice of one task's split."""

    task: str
    split: str | None
    limit: int | None
    shuffle_seed: int | None
    mode: str
    decomposer: str | None
    solver: str
    label: str
    requires: tuple[str, ...] = ()
    pipeline: dict[str, Any] = field(default_factory=dict)
    decompositions: str | None = None  # the label of the cell (same task, same decomposer) whose subquestions it takes

    @property
    def slug(self) -> str:
        return slug(self.label)

    def run_dir(self, out: Path) -> Path:
        return out / self.task / self.slug

    def borrow_from(self, out: Path) -> Path | None:
        """The run dir whose decompositions this cell takes (:mod:`divcon.pipeline.borrowed`), if it names one."""
        return out / self.task / slug(self.decompositions) if self.decompositions else None

    def missing(self) -> list[str]:
        """Required paths (trained students) that do not exist: such a cell is skipped, not run."""
        return [r for r in self.requires if not Path(r).exists()]

    def pipeline_config(self) -> PipelineConfig:
        return PipelineConfig(mode=self.mode, **self.pipeline)


@dataclass
class Grid:
    cells: list[Cell]
    concurrency: int | None = None
    out: Path | None = None
    title: str | None = None
    baselines: tuple[str, ...] = ()  # cell labels: the report pairs every cell of a task with each of them


def slug(label: str) -> str:
    """A folder name for a label: 'T/S' -> 'T-S', 'T (single)' -> 'T-single'."""
    s = re.sub(r"[^A-Za-z0-9._+-]+", "-", label).strip("-.")
    if not s:
        raise GridError(f"label {label!r} gives an empty folder name")
    return s


def short_name(spec: str | None) -> str:
    """A readable model name for labels: the alias of an embedded model, the folder of a student (the folder above
    a trailing ``adapter``/``merged``, which says nothing on its own)."""
    if not spec:
        return "-"
    kind, _, rest = spec.partition(":")
    name, *opts = (rest or kind).split(",")
    for o in opts:
        k, _, v = o.partition("=")
        if k in ("adapter", "lora"):  # a LoRA on transformers or on llama.cpp
            name = v
    parts = [p for p in Path(name).parts if p not in ("adapter", "merged", "final")]
    return parts[-1] if parts else name


def derived_label(cfg: dict[str, Any]) -> str:
    """The label of a run that has none (not from a grid, or an unlabelled cell): 'D/S', 'D/S (dynamic)', 'S (cot)'."""
    if cfg.get("mode") in STAGED_MODES:
        base = f"{short_name(cfg.get('decomposer'))}/{short_name(cfg['solver'])}"
        return base if cfg["mode"] == "two-stage" else f"{base} ({cfg['mode']})"
    return f"{short_name(cfg['solver'])} ({cfg.get('mode')})"


def _task_settings(entry: Any, defaults: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """A ``tasks`` entry: a bare name, or ``{name: {limit: .., split: .., shuffle_seed: ..}}``."""
    if isinstance(entry, str):
        return entry, dict(defaults)
    if isinstance(entry, dict) and len(entry) == 1:
        name, over = next(iter(entry.items()))
        over = over or {}
        if not isinstance(over, dict) or set(over) - TASK_KEYS:
            raise GridError(f"task {name!r}: settings must be a mapping of {sorted(TASK_KEYS)}, got {over!r}")
        return str(name), {**defaults, **over}
    raise GridError(f"a tasks entry is a name or a one-key mapping {{name: {{limit: ..}}}}, got {entry!r}")


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    return [str(v) for v in (value if isinstance(value, list) else [value])]


def parse_grid(data: dict[str, Any]) -> Grid:
    """Expand a config mapping into cells, task-major (all cells of the first task, then the next task ...), each
    task's cells in config order. Validates keys, modes and labels here so a typo fails before any model loads."""
    from divcon.tasks import get_task

    if not isinstance(data, dict):
        raise GridError("a grid config is a mapping with at least 'tasks' and 'cells'")
    unknown = set(data) - TOP_KEYS
    if unknown:
        raise GridError(f"unknown top-level keys {sorted(unknown)}; known: {sorted(TOP_KEYS)}")
    models: dict[str, str] = {str(k): str(v) for k, v in (data.get("models") or {}).items()}
    defaults = {k: data.get(k) for k in TASK_KEYS}
    base_pipeline = dict(data.get("pipeline") or {})
    tasks: dict[str, dict[str, Any]] = dict(_task_settings(e, defaults) for e in data.get("tasks") or [])
    raw_cells = data.get("cells") or []
    if not raw_cells:
        raise GridError("the grid has no cells")
    for name in tasks:
        get_task(name)

    cells_by_task: dict[str, list[Cell]] = {}
    for i, raw in enumerate(raw_cells):
        if not isinstance(raw, dict):
            raise GridError(f"cell {i + 1} is not a mapping: {raw!r}")
        bad = set(raw) - CELL_KEYS
        if bad:
            raise GridError(f"cell {i + 1}: unknown keys {sorted(bad)}; known: {sorted(CELL_KEYS)}")
        mode = str(raw.get("mode", "two-stage"))
        if mode not in MODES:
            raise GridError(f"cell {i + 1}: unknown mode {mode!r}; modes: {', '.join(MODES)}")
        if "solver" not in raw:
            raise GridError(f"cell {i + 1}: no solver")
        solver = models.get(str(raw["solver"]), str(raw["solver"]))
        staged = mode in STAGED_MODES
        decomposer = models.get(str(raw["decomposer"]), str(raw["decomposer"])) if raw.get("decomposer") else None
        if staged and decomposer is None:
            decomposer = solver
        if not staged and decomposer is not None:
            raise GridError(f"cell {i + 1}: mode {mode} has no decomposer")
        label = str(raw.get("label") or derived_label({"mode": mode, "decomposer": decomposer, "solver": solver}))
        pipeline = {**base_pipeline, **(raw.get("pipeline") or {})}
        PipelineConfig(mode=mode, **pipeline)  # fail early on a bad pipeline key
        cell_tasks = _as_list(raw.get("tasks")) or list(tasks)
        if not cell_tasks:
            raise GridError(f"cell {label!r}: no tasks (set top-level 'tasks' or the cell's 'tasks')")
        for t in cell_tasks:
            get_task(t)
            settings = tasks.get(t, defaults)
            cells_by_task.setdefault(t, []).append(Cell(
                task=t, split=settings["split"], limit=settings["limit"], shuffle_seed=settings["shuffle_seed"],
                mode=mode, decomposer=decomposer, solver=solver, label=label,
                requires=tuple(_as_list(raw.get("requires"))), pipeline=pipeline,
                decompositions=str(raw["decompositions"]) if raw.get("decompositions") else None))

    order = list(tasks) + [t for t in cells_by_task if t not in tasks]
    cells = [c for t in order for c in cells_by_task.get(t, [])]
    seen: dict[tuple[str, str], str] = {}
    for c in cells:
        if (c.task, c.slug) in seen:
            raise GridError(f"task {c.task}: labels {seen[(c.task, c.slug)]!r} and {c.label!r} share the folder "
                            f"{c.slug!r}; give them distinct labels")
        seen[(c.task, c.slug)] = c.label
    _check_borrowing(cells)
    out = Path(data["out"]) if data.get("out") else None
    concurrency = data.get("concurrency")
    if concurrency is not None and (not isinstance(concurrency, int) or concurrency < 1):
        raise GridError(f"concurrency must be a whole number >= 1 (or null), got {concurrency!r}")
    baselines = _baselines(data.get("baseline"))
    for b in baselines:
        if b not in {c.label for c in cells}:
            raise GridError(f"baseline {b!r} is not the label of a cell")
    return Grid(cells=cells, concurrency=concurrency, out=out, title=data.get("title"), baselines=baselines)


def _check_borrowing(cells: list[Cell]) -> None:
    """A cell's ``decompositions`` names another two-stage cell of each of its tasks with the same decomposer, which
    takes no one's decompositions itself (the run checks the rest: identities, settings, prompts)."""
    by_key = {(c.task, c.label): c for c in cells}
    for c in cells:
        if c.decompositions is None:
            continue
        source = by_key.get((c.task, c.decompositions))
        where = f"cell {c.label!r}, task {c.task}: decompositions {c.decompositions!r}"
        if c.mode != "two-stage":
            raise GridError(f"{where}: only a two-stage cell takes another's decompositions, not {c.mode}")
        if source is None or source is c:
            raise GridError(f"{where} is not the label of another cell of that task")
        if source.mode != "two-stage" or source.decomposer != c.decomposer or source.decompositions:
            raise GridError(f"{where} must be a two-stage cell with the same decomposer ({c.decomposer}) that makes "
                            f"its own decompositions")


def _baselines(value: Any) -> tuple[str, ...]:
    """The config's ``baseline``: one label, or a list of them (Table 1 pairs each row with T/T and with T single)."""
    if value is None:
        return ()
    if isinstance(value, list):
        return tuple(str(v) for v in value)
    return (str(value),)


def load_grid(path: Path) -> Grid:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise GridError(f"{path}: not valid YAML: {e}") from None
    return parse_grid(data)


def cell_size(cell: Cell) -> int:
    """Number of examples the cell evaluates (loads the split; no model)."""
    from divcon.tasks import get_task

    return len(get_task(cell.task).examples(cell.split, cell.limit, 0, cell.shuffle_seed))


@dataclass
class CellStatus:
    """Where one cell stands: done | partial | pending | skipped | failed, with the reason for the last two."""

    status: str
    n: int
    done: int = 0
    reason: str | None = None


def file_status(cell: Cell, out: Path) -> CellStatus:
    """Status from the requirements and run files alone, so a grid.json rewritten by an invocation that ran only
    some cells (``--only-task``, an interrupted run) stays truthful about the others."""
    missing = cell.missing()
    if missing:
        return CellStatus("skipped", 0, 0, f"missing {', '.join(missing)}")
    try:
        n = cell_size(cell)
    except (ValueError, OSError) as e:  # unknown split, data set not on disk
        return CellStatus("failed", 0, 0, f"{type(e).__name__}: {e}")
    done = len(read_records(cell.run_dir(out)))
    return CellStatus("done" if done >= n else "partial" if done else "pending", n, done)


def write_grid_json(out: Path, grid: Grid, statuses: list[CellStatus], config_path: Path | None) -> Path:
    """``grid.json``: the title and each cell with its label, run dir (relative to ``out``, so the folder can move)
    and status. The report reads labels and its default title from here."""
    entries = []
    for c, s in zip(grid.cells, statuses):
        d = asdict(c)
        d["requires"] = list(c.requires)
        entries.append({**d, "slug": c.slug, "run_dir": str(c.run_dir(Path("."))), **asdict(s)})
    path = out / "grid.json"
    out.mkdir(parents=True, exist_ok=True)
    write_json(path, {"config": str(config_path) if config_path else None, "title": grid.title,
                      "baselines": list(grid.baselines), "cells": entries})
    return path


def read_grid_json(grid_dir: Path) -> dict[str, Any]:
    """A grid dir's ``grid.json``, with each cell's ``run_dir`` made absolute."""
    data = json.loads((grid_dir / "grid.json").read_text(encoding="utf-8"))
    data["cells"] = [{**e, "run_dir": str((grid_dir / e["run_dir"]).resolve())} for e in data["cells"]]
    return data


def grid_baselines(grid: dict[str, Any]) -> list[str]:
    """The baseline labels a ``grid.json`` names: ``baselines``, or the single ``baseline`` of one written before
    a grid could name several (committed run folders keep those)."""
    if grid.get("baselines"):
        return list(grid["baselines"])
    return [grid["baseline"]] if grid.get("baseline") else []


ProgressFn = Callable[[Cell, int, int, dict | None], None]


def run_grid(grid: Grid, out: Path, statuses: list[CellStatus], config_path: Path | None = None,
             only: Callable[[Cell], bool] | None = None, on_progress: ProgressFn | None = None,
             on_cell_start: Callable[[Cell], None] | None = None, stop: StopWhen | None = None,
             concurrency: int | None = None) -> list[CellStatus]:
    """Run every runnable cell (those ``only`` accepts, if given), resuming those already started, and keep
    ``grid.json`` (which always lists every cell) current after each. ``statuses`` come from :func:`file_status`;
    the caller computed them already to size the progress bar.

    A cell that fails (model not installed, a run dir holding another config) is recorded as failed and the grid
    goes on; interrupts and a backend outage (:class:`BackendUnavailable`) propagate, and a re-run resumes.
    ``stop`` (a time box) is handed to each cell's runner: when it is reached the grid stops cleanly, the cell in
    progress stays partial, and a re-run resumes it. That lets a time-boxed session end with everything written
    and ``grid.json`` truthful. ``concurrency`` overrides the config's questions in flight.
    """
    from divcon.backends import BackendUnavailable
    from divcon.evaluate import evaluate

    statuses = list(statuses)
    write_grid_json(out, grid, statuses, config_path)
    for i, cell in enumerate(grid.cells):
        if statuses[i].status in ("skipped", "failed") or (only is not None and not only(cell)):
            continue
        if stop and stop.out_of_time():
            break
        if on_cell_start:
            on_cell_start(cell)

        def progress(k: int, total: int, rec: dict | None, cell: Cell = cell) -> None:
            if on_progress:
                on_progress(cell, k, total, rec)

        try:
            evaluate(cell.task, solver=cell.solver, decomposer=cell.decomposer, pcfg=cell.pipeline_config(),
                     split=cell.split, limit=cell.limit, shuffle_seed=cell.shuffle_seed, out=cell.run_dir(out),
                     concurrency=concurrency or grid.concurrency, stop=stop, on_progress=progress,
                     borrow_from=cell.borrow_from(out))
            statuses[i] = file_status(cell, out)
        except BackendUnavailable:  # an outage is not this cell's fault: stop the grid, keep what is written
            statuses[i] = file_status(cell, out)
            write_grid_json(out, grid, statuses, config_path)
            raise
        except (ValueError, RuntimeError, OSError) as e:  # ConfigMismatch and ModelNotAvailable are RuntimeErrors
            statuses[i] = CellStatus("failed", statuses[i].n, len(read_records(cell.run_dir(out))),
                                     f"{type(e).__name__}: {e}")
        write_grid_json(out, grid, statuses, config_path)
    return statuses


def run_round_robin(cells: list[Cell], out: Path, chunk: int, deadline: float | None,
                    concurrency: int | None = None, on_chunk: Callable[[Cell, dict], None] | None = None,
                    up_to: int | None = None) -> None:
    """Evaluate ``cells`` in rounds until all are complete: each round raises every cell to the same level, ``chunk``
    above the one with fewest records (a cell already there waits). A run cut short at ``deadline`` (a
    ``time.monotonic()`` instant) leaves the cells at about the same n, so a comparison of them already means
    something; every cell resumes from its records, so stopping anywhere loses at most the questions in flight.
    Cells whose ``requires`` are missing are skipped. ``on_chunk(cell, summary)`` follows each cell's chunk.
    ``up_to`` stops every cell at that many questions (a stage of a long grid: one task's rows to the n an issue
    needs before another task starts; the config's limits stay the goal of a later run)."""
    from divcon.evaluate import evaluate

    def have(c: Cell) -> int:
        return len(read_records(c.run_dir(out)))

    pending = [c for c in cells if file_status(c, out).status not in ("done", "skipped")
               and (up_to is None or have(c) < up_to)]
    while pending:
        level = min(have(c) for c in pending) + chunk
        if up_to is not None:
            level = min(level, up_to)
        for c in list(pending):
            if deadline is not None and time.monotonic() >= deadline:
                return
            quota = level - have(c)
            if quota > 0:
                _, s = evaluate(c.task, solver=c.solver, decomposer=c.decomposer, pcfg=c.pipeline_config(),
                                split=c.split, limit=c.limit, shuffle_seed=c.shuffle_seed, out=c.run_dir(out),
                                concurrency=concurrency, stop=StopWhen(deadline, max_new=quota),
                                borrow_from=c.borrow_from(out))
                if on_chunk:
                    on_chunk(c, s)
            if file_status(c, out).status == "done" or (up_to is not None and have(c) >= up_to):
                pending.remove(c)
