"""Teacher traces for distillation: K decompositions per question from the teacher, each solved by the teacher, scored.

A traces dir is a run dir (see :mod:`divcon.runs`): ``config.json`` plus ``records.jsonl`` with one line per
(question, sample). Re-running the same command resumes where it stopped; every model call also goes through the call
log, so even a deleted traces dir is rebuilt from cache without recomputing.

Sample ``k`` decomposes with seed ``k``: with K > 1 and temperature > 0 the samples differ, and each is cached under its
own key. The solver always decodes greedily, so identical decompositions share one solve call.
"""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path
from typing import Callable

from divcon import __version__
from divcon.backends import RequestRejected, load_backend
from divcon.evaluate import default_concurrency, failed
from divcon.pipeline import Pipeline, PipelineConfig, for_family, prompts_fingerprint, settings_of
from divcon.runner import Scoring, StopWhen, run_in_flight
from divcon.runs import RecordWriter, check_config, open_run, read_records
from divcon.tasks import Example, Task, get_task

DISPLAY_KEYS = ("teacher",)  # the spec as typed; the resume check compares its identity ("models")
SAMPLED_TEMPERATURE = 0.7  # the default when several samples are asked for: greedy decoding would repeat itself


def is_correct(task: Task, metrics: dict[str, float]) -> bool:
    """Whether a trace counts as correct for rejection sampling (SD-R).

    The task's primary metric must be a perfect 1.0 (numeric EM for math, normalised EM for open QA). DROP's primary
    metric is F1, where a partial overlap scores between 0 and 1; a trace that is only partly right is not a trace to
    imitate, so for the reading family the test is EM == 1.0 instead.
    """
    key = "em" if task.family == "reading" else task.primary
    return metrics.get(key, 0.0) == 1.0


def default_traces_dir(task: str, split: str, teacher: str, samples: int, limit: int | None, routes: bool = False,
                       root: Path = Path("runs") / "traces") -> Path:
    short = teacher.replace("llamacpp:", "").replace("/", "_").replace(":", "-").replace(",", "_").strip("_")
    return root / (f"{task}_{split}_T-{short}_k{samples}_n{limit if limit is not None else 'all'}"
                   + ("_routes" if routes else ""))


class TraceRecord(Scoring, total=False):
    """One teacher trace (a line of a traces dir's records.jsonl): sample ``sample`` of question ``id`` by one
    route, with what the distillation sets are built from."""

    sample: int
    route: str  # "two-stage" | "single"
    task: str
    family: str
    max_subquestions: int
    solve_style: str
    question: str
    context: str | None
    subquestions: list[str]
    decomposer_output: str
    solution: str
    correct: bool


def trace(pipe: Pipeline, task: Task, ex: Example, k: int) -> TraceRecord:
    """One teacher trace: sample ``k``'s decomposition of ``ex``, the teacher's solution, and its score."""
    c = for_family(pipe.config, task.family)  # the settings it ran with
    rec = TraceRecord(id=ex.id, sample=k, route="single" if c.mode == "cot" else "two-stage", task=task.name,
                      family=task.family, max_subquestions=c.max_subquestions, solve_style=c.solve_style,
                      question=ex.question, context=ex.context, golds=ex.golds)
    try:
        res = pipe.run_one(ex, task.family)
    except RequestRejected as e:  # e.g. a passage over the context window: kept as an error, dropped by build
        rec.update(subquestions=[], decomposer_output="", solution="", correct=False, truncated=False, usage=[],
                   **failed(task, ex.golds, e))
    else:
        scored = task.evaluate(res.final_output, ex.golds)
        rec.update(subquestions=res.subquestions, decomposer_output=res.outputs.get("decompose", ""),
                   solution=res.outputs["solve"], answer=scored.answer, answer_source=scored.answer_source,
                   correct=is_correct(task, scored.metrics), metrics=scored.metrics, truncated=res.truncated,
                   usage=[asdict(u) for u in res.usage])
    return rec


def generate_traces(
    task_name: str,
    split: str = "train",
    teacher_spec: str = "llamacpp:qwen2.5-1.5b",
    samples: int = 1,
    temperature: float | None = None,
    limit: int | None = None,
    offset: int = 0,
    out_dir: Path | None = None,
    on_progress: Callable[[int, int, dict | None], None] | None = None,
    pipeline: PipelineConfig | None = None,
    routes: bool = False,
    concurrency: int | None = None,
    stop: StopWhen | None = None,
) -> tuple[Path, dict]:
    """Generate (or resume) teacher traces. Returns the traces dir and a small summary.

    ``temperature`` defaults to 0 (greedy) for one sample and to 0.7 for several. ``on_progress(k, total, record)``
    is called once with the already-done count (record None), then once per new record. ``pipeline`` holds the
    teacher's prompt settings (subquestions, shots, solve style); its mode, temperature and seed are set here. With
    ``routes`` each question is also solved single-stage, step by step, ``samples`` times (samples K..2K-1, marked
    ``route: single``), which the ``sd-route`` training set needs to tell where decomposing paid. Up to
    ``concurrency``
    (question, sample) pairs are in flight; ``stop`` ends the run early and cleanly.
    """
    if samples < 1:
        raise ValueError(f"samples must be >= 1, not {samples}")
    if temperature is None:
        temperature = SAMPLED_TEMPERATURE if samples > 1 else 0.0
    if samples > 1 and temperature == 0.0:
        raise ValueError("several samples at temperature 0 would all be the same greedy decomposition; "
                         "set a temperature > 0 (e.g. 0.7)")
    task = get_task(task_name)
    examples = task.examples(split, limit, offset)
    if not examples:
        raise ValueError(f"{task_name}/{split} with limit={limit} offset={offset} selects no examples")
    teacher = load_backend(teacher_spec)
    base = pipeline or PipelineConfig()
    pipes = [Pipeline(replace(base, mode="two-stage", temperature=temperature, seed=k), solver=teacher)
             for k in range(samples)]
    if routes:
        pipes += [Pipeline(replace(base, mode="cot", temperature=temperature, seed=k), solver=teacher)
                  for k in range(samples)]
    cfg = {"kind": "traces", "task": task.name, "split": split, "limit": limit, "offset": offset,
           "teacher": teacher.spec, "models": {"teacher": teacher.identity.key}, "samples": samples, "routes": routes,
           "temperature": temperature,  # the two-stage pipeline's settings: the cot route reads a subset of them
           "pipeline": settings_of(pipes[0].config, task.family) | {"seed": None},
           "prompts": "+".join(dict.fromkeys(prompts_fingerprint(p.config, task.family) for p in pipes)),
           "divcon_version": __version__}
    run_dir = out_dir or default_traces_dir(task.name, split, teacher_spec, samples, limit, routes)
    check_config(run_dir, cfg, DISPLAY_KEYS)  # before anything is created: see divcon.evaluate.evaluate
    total = len(examples) * len(pipes)
    if len(read_records(run_dir)) < total:
        teacher.load()
    with open_run(run_dir, cfg, DISPLAY_KEYS):
        done = {(r["id"], r["sample"]) for r in read_records(run_dir, repair=True)}
        if on_progress:
            on_progress(len(done), total, None)
        todo = [(ex, k) for ex in examples for k in range(len(pipes)) if (ex.id, k) not in done]
        with RecordWriter(run_dir) as writer:
            def write(rec: dict) -> None:
                writer.write(rec)
                if on_progress:
                    on_progress(1, total, rec)

            run_in_flight(todo, lambda job: trace(pipes[job[1]], task, *job), write,
                          concurrency or default_concurrency(teacher), stop)
    records = read_records(run_dir)
    n_correct = sum(r["correct"] for r in records)
    summary = {"traces": len(records), "questions": len({r["id"] for r in records}), "correct": n_correct,
               "accuracy": n_correct / len(records) if records else 0.0,
               "questions_with_a_correct_trace": len({r["id"] for r in records if r["correct"]})}
    return run_dir, summary
