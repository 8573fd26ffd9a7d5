"""Evaluate a pipeline on a task: resumable, one record per example, a summary with quality, tokens, $ and time."""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from pathlib import Path
from typing import Callable

from divcon import __version__
from divcon.backends import LoggedBackend, RequestRejected, load_backend
from divcon.backends.base import accounting_name
from divcon.cost import Price, load_table, price_of
from divcon.pipeline.borrowed import borrow_decompositions
from divcon.pipeline import (STAGED_MODES, Pipeline, PipelineConfig, bare_for_students, prompts_fingerprint,
                             settings_of)
from divcon.runner import Scoring, StopWhen, run_in_flight
from divcon.runs import RecordWriter, check_config, open_run, read_records, write_json
from divcon.tasks import Example, Task, get_task

log = logging.getLogger("divcon")


DISPLAY_KEYS = ("decomposer", "solver")  # specs as typed; the resume check compares their identities ("models")


def run_config(task: Task, split: str, limit: int | None, offset: int, shuffle_seed: int | None,
               decomposer: LoggedBackend | None, solver: LoggedBackend, pcfg: PipelineConfig) -> dict:
    staged = pcfg.mode in STAGED_MODES
    models = {"solver": solver.identity.key}
    if staged and decomposer is not None:
        models["decomposer"] = decomposer.identity.key
    return {
        "task": task.name, "split": split, "limit": limit, "offset": offset, "shuffle_seed": shuffle_seed,
        "mode": pcfg.mode, "decomposer": decomposer.spec if staged and decomposer is not None else None,
        "solver": solver.spec, "models": models, "pipeline": settings_of(pcfg, task.family),
        "prompts": prompts_fingerprint(pcfg, task.family),
    }


def default_run_name(cfg: dict) -> str:
    def short(spec: str | None) -> str:
        return (spec or "").replace("llamacpp:", "").replace("/", "_").replace(":", "-").replace(",", "_").strip("_")

    parts = [cfg["task"], cfg["split"], cfg["mode"]]
    if cfg["decomposer"]:
        parts.append(f"D-{short(cfg['decomposer'])}")
    parts.append(f"S-{short(cfg['solver'])}")
    parts.append(f"n{cfg['limit'] if cfg['limit'] is not None else 'all'}")
    return "_".join(parts)


class EvalRecord(Scoring, total=False):
    """One evaluated question (a line of an eval run's records.jsonl): the scoring fields plus what the pipeline
    did (:class:`divcon.pipeline.PipelineResult` as a dict)."""

    question: str
    has_context: bool
    mode: str
    subquestions: list[str]
    outputs: dict[str, str]
    final_output: str


def failed(task: Task, golds: list[str], error: Exception) -> dict:
    """The scoring fields of an example that could not be run (eval record or teacher trace alike): 0 on every
    metric of the task, and the reason in one line."""
    return {"answer": None, "answer_source": "error", "metrics": {k: 0.0 for k in task.evaluate("", golds).metrics},
            "error": str(error).splitlines()[0] if str(error) else type(error).__name__}


def error_record(task: Task, ex: Example, mode: str, error: Exception) -> EvalRecord:
    """The record of an example that could not be run: scored 0 on every metric, with the reason."""
    return EvalRecord(id=ex.id, question=ex.question, has_context=ex.context is not None, golds=ex.golds, mode=mode,
                      subquestions=[], outputs={}, final_output="", usage=[], truncated=False,
                      **failed(task, ex.golds, error))


def answer(pipe: Pipeline, task: Task, ex: Example) -> EvalRecord:
    """One example's record. A request the backend rejects (a prompt over the context window) fails only its own
    example: it becomes an error record, so one bad example can never stop, or forever block, a run."""
    try:
        res = pipe.run_one(ex, task.family)
    except RequestRejected as e:
        return error_record(task, ex, pipe.config.mode, e)
    scored = task.evaluate(res.final_output, ex.golds)
    return EvalRecord(id=ex.id, question=ex.question, has_context=ex.context is not None, golds=ex.golds,
                      **res.to_dict(), answer=scored.answer, answer_source=scored.answer_source,
                      metrics=scored.metrics)


def default_concurrency(*backends: LoggedBackend) -> int:
    """Questions in flight when none is asked for: what the slowest-to-parallelise backend serves at once (an
    in-process model 1, a llama.cpp server its slots, an API its concurrency option)."""
    return max(1, min(b.concurrency for b in backends))


def evaluate(
    task_name: str,
    solver: str,
    decomposer: str | None = None,
    pcfg: PipelineConfig | None = None,
    split: str | None = None,
    limit: int | None = None,
    offset: int = 0,
    shuffle_seed: int | None = None,
    out: Path | None = None,
    runs_root: Path = Path("runs"),
    concurrency: int | None = None,
    stop: StopWhen | None = None,
    on_progress: Callable[[int, int, dict | None], None] | None = None,
    borrow_from: Path | None = None,
) -> tuple[Path, dict]:
    """Run (or resume) an evaluation; returns the run dir and its summary.

    Up to ``concurrency`` questions are in flight (default: :func:`default_concurrency`); ``stop`` ends the run
    early and cleanly (a re-run continues). Order matters for "nothing silently wrong": the models are resolved
    (their identities) and loaded, and an existing run dir's config is checked, before the run dir is created or
    locked, so a typo in a model path leaves nothing behind that would refuse the corrected command.

    ``borrow_from``: a two-stage run dir with the same decomposer whose decompositions this run takes instead of
    asking the decomposer again (:mod:`divcon.pipeline.borrowed`); the decomposer is loaded only if a question it
    has not answered is left.
    """
    pcfg = pcfg or PipelineConfig()
    task = get_task(task_name)
    split = split or task.default_split
    examples = task.examples(split, limit, offset, shuffle_seed)
    if not examples:
        raise ValueError(f"{task_name}/{split} with limit={limit} offset={offset} selects no examples")
    staged = pcfg.mode in STAGED_MODES
    solver_b = load_backend(solver)
    decomposer_b = load_backend(decomposer) if staged and decomposer and decomposer != solver else solver_b
    pcfg = bare_for_students(pcfg, solver_b, decomposer_b)  # what the pipeline runs, so what the run records
    cfg = {**run_config(task, split, limit, offset, shuffle_seed, decomposer_b, solver_b, pcfg),
           "divcon_version": __version__}
    run_dir = out or runs_root / default_run_name(cfg)
    check_config(run_dir, cfg, DISPLAY_KEYS)
    borrowed = borrow_decompositions(borrow_from, cfg, task.family) if borrow_from else {}
    done = {r["id"] for r in read_records(run_dir)}
    if any(e.id not in done for e in examples):
        solver_b.load()
        if any(e.id not in done and e.id not in borrowed for e in examples):
            decomposer_b.load()
    pipe = Pipeline(pcfg, solver=solver_b, decomposer=decomposer_b, borrowed=borrowed)
    with open_run(run_dir, cfg, DISPLAY_KEYS):
        done = {r["id"] for r in read_records(run_dir, repair=True)}
        todo = [e for e in examples if e.id not in done]
        if on_progress:
            on_progress(len(examples) - len(todo), len(examples), None)
        with RecordWriter(run_dir) as writer:
            def write(rec: dict) -> None:
                writer.write(rec)
                if on_progress:
                    on_progress(1, len(examples), rec)

            run_in_flight(todo, lambda ex: answer(pipe, task, ex), write,
                          concurrency or default_concurrency(solver_b, decomposer_b), stop)
        records = read_records(run_dir)
        summary = summarize(records, {**cfg, "run_dir": str(run_dir)})
        write_json(run_dir / "summary.json", summary)
    return run_dir, summary


_WARNED_UNPRICED: set[str] = set()


def _usage_table(records: list[dict], key: str, prices: dict) -> dict:
    """Tokens, seconds, calls and dollars summed by ``key`` (model or stage). Dollars are None for a row that
    includes an unpriced model: unknown is not $0."""
    acc: dict = defaultdict(lambda: {"tokens_in": 0, "tokens_out": 0, "seconds": 0.0, "calls": 0, "dollars": 0.0})
    priced: dict[str, Price] = {}  # one lookup per model, not per record (an hf: student's price reads a file)
    for r in records:
        for u in r["usage"]:
            model = accounting_name(u["model"])  # records written before usage was recorded under this name
            if model not in priced:
                priced[model] = price_of(model, prices)
            a = acc[model if key == "model" else u[key]]
            a["tokens_in"] += u["tokens_in"]
            a["tokens_out"] += u["tokens_out"]
            a["seconds"] += u["seconds"]
            a["calls"] += u["calls"]
            p = priced[model]
            if p.source == "unpriced" or a["dollars"] is None:
                a["dollars"] = None
            else:
                a["dollars"] += p.dollars(u["tokens_in"], u["tokens_out"])
    return dict(acc)


def unpriced_models(models: list[str], prices: dict) -> list[str]:
    """The models with no price (not in the table, parameters unknown), each warned about once per process."""
    out = sorted(m for m in models if price_of(m, prices).source == "unpriced")
    for m in out:
        if m not in _WARNED_UNPRICED:
            _WARNED_UNPRICED.add(m)
            log.warning("%s has no price (not in the price table, parameters unknown): its dollars are shown as "
                        "'unpriced'; add it to a prices file ($DIVCON_PRICES) or give the spec ,params_b=N", m)
    return out


def big_model(models: list[str], prices: dict, prefer: str | None = None) -> str | None:
    """The model whose tokens cost most: the teacher whose spend distillation is meant to cut. An unpriced model
    might be the most expensive, so it ranks first (and its dollars show as unpriced); ties go to ``prefer``
    (the solver)."""
    if not models:
        return None

    def rank(model: str) -> tuple[float, float, bool]:
        p = price_of(model, prices)
        if p.source == "unpriced":
            return math.inf, math.inf, model == prefer
        return p.out_per_1k, p.in_per_1k, model == prefer

    return max(models, key=rank)


def busy_seconds(records: list[dict]) -> float:
    """Wall time the run spent working: the union of the records' [started_at, finished_at] intervals, so questions
    in flight together count once and the pause between a kill and a resume counts not at all. Records from before
    those fields existed count their own ``wall_seconds``."""
    spans = sorted((r["started_at"], r["finished_at"]) for r in records if "started_at" in r)
    total = sum(r.get("wall_seconds", 0.0) for r in records if "started_at" not in r)
    end = -math.inf
    for a, b in spans:
        if b > end:
            total += b - max(a, end)
            end = b
    return total


def summarize(records: list[dict], cfg: dict, prices: dict | None = None, big: str | None = None) -> dict:
    """Means of each metric, usage by model and stage, dollars, and the big model's spend. Pure function of the
    records, so reports can recompute it from run files."""
    prices = prices or load_table()
    n = len(records)
    metric_names = sorted({k for r in records for k in r["metrics"]})
    metrics = {m: sum(r["metrics"].get(m, 0.0) for r in records) / n if n else 0.0 for m in metric_names}
    by_model = _usage_table(records, "model", prices)
    by_stage = _usage_table(records, "stage", prices)
    big = big or big_model(list(by_model), prices, prefer=accounting_name(cfg.get("solver") or ""))
    unpriced = unpriced_models(list(by_model), prices)
    busy = busy_seconds(records)
    cached = sum(u.get("calls", 1) for r in records for u in r["usage"] if u.get("cached"))
    sources: dict[str, int] = defaultdict(int)
    for r in records:
        sources[r["answer_source"]] += 1
    bm = by_model.get(big, {"tokens_in": 0, "tokens_out": 0, "dollars": 0.0})
    return {
        **{k: cfg.get(k) for k in ("task", "split", "mode", "decomposer", "solver", "run_dir")},
        "n": n,
        "errors": sum(1 for r in records if r.get("error")),
        "primary": get_task(cfg["task"]).primary if cfg.get("task") else None,
        "metrics": metrics,
        "answer_source": dict(sources),
        "truncated": sum(1 for r in records if r.get("truncated")),
        "mean_subquestions": sum(len(r["subquestions"]) for r in records) / n if n else 0.0,
        # two-stage questions the solver answered with no subquestions: "No decomposition needed." or nothing
        # parseable. A decomposer that mostly lands here leaves the solver alone, which is then single-stage.
        "no_subquestions": sum(1 for r in records
                               if r.get("mode") == "two-stage" and not r["subquestions"] and not r.get("error")),
        "by_model": by_model,
        "by_stage": by_stage,
        "tokens_in": sum(v["tokens_in"] for v in by_model.values()),
        "tokens_out": sum(v["tokens_out"] for v in by_model.values()),
        "dollars": None if unpriced else sum(v["dollars"] for v in by_model.values()),
        "unpriced": unpriced,
        "model_seconds": sum(v["seconds"] for v in by_model.values()),
        "wall_seconds": sum(r.get("wall_seconds", 0.0) for r in records),  # per-question latency, summed
        "busy_seconds": busy,
        "cached_calls": cached,
        # a run's own throughput, so none where calls came from the call cache (they took no time in this run)
        "questions_per_hour": n / busy * 3600 if busy > 0 and not cached else None,
        "big_model": big,
        "big_model_tokens": bm["tokens_in"] + bm["tokens_out"],
        "big_model_dollars": bm["dollars"],
    }
