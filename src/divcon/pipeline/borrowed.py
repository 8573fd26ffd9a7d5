"""Decompositions borrowed from another run dir: a cell that puts a second solver behind the same decomposer (T/Q
beside T/T) takes the first cell's subquestions instead of asking the decomposer again.

Why: the call log (:mod:`divcon.backends.calllog`) shares such a stage when both cells run on one machine, but it does
not outlive the machine. A grid resumed in a later session would decompose afresh: at the big model's cost, and, with
batched decoding, not always into the same text, so the two solvers would no longer be compared on the same
subquestions. A run dir's records hold each decomposition with its usage, so they serve as a call log that travels
with the commit. A borrowed generation is replayed like a cache hit: its tokens and seconds are the original
computation's, and its stage is marked cached (so the run's questions/hour is not claimed as its own).

Borrowing is refused unless the source sent the same decomposer the same request: the same model identity, task and
split, the same decomposer settings, and prompts that today's code still sends (the source's recorded prompts
fingerprint). A question the source has not answered yet is decomposed afresh.
"""

from __future__ import annotations

import json
from pathlib import Path

from divcon.backends.base import Generation
from divcon.pipeline.pipelines import PipelineConfig, TwoStage, prompts_fingerprint
from divcon.runs import read_records


class BorrowError(ValueError):
    """The source run dir's decompositions were not made by the request this run would send."""


def borrow_decompositions(source: Path, cfg: dict, family: str) -> dict[str, Generation]:
    """The decompositions in run dir ``source`` by question id, as generations replayed from a cache, for a run whose
    config (:func:`divcon.evaluate.run_config`) is ``cfg``. An empty mapping when ``source`` has not started."""
    path = source / "config.json"
    if not path.exists():
        return {}
    src = json.loads(path.read_text(encoding="utf-8"))
    problems = [f"{k} {src.get(k)!r} is not {cfg.get(k)!r}" for k in ("mode", "task", "split")
                if src.get(k) != cfg.get(k)]
    if cfg.get("mode") != "two-stage":
        problems.append(f"only a two-stage run borrows decompositions, not {cfg.get('mode')!r}")
    if src.get("models", {}).get("decomposer") != cfg["models"].get("decomposer"):
        problems.append(f"its decomposer {src.get('decomposer')!r} is another model than {cfg.get('decomposer')!r}")
    src_pipeline, pipeline = src.get("pipeline", {}), cfg["pipeline"]
    problems += [f"{k} {src_pipeline.get(k)!r} is not {pipeline.get(k)!r}" for k in TwoStage.decompose_settings
                 if src_pipeline.get(k) != pipeline.get(k)]
    if not problems and prompts_fingerprint(PipelineConfig(**src_pipeline), family) != src.get("prompts"):
        problems.append("it was made with prompts that today's code no longer sends")
    if problems:
        raise BorrowError(f"cannot borrow the decompositions of {source}: " + "; ".join(problems))
    borrowed = {}
    for r in read_records(source):
        usage = [u for u in r["usage"] if u["stage"] == "decompose"]
        if r.get("error") or "decompose" not in r.get("outputs", {}) or len(usage) != 1 or usage[0]["calls"] != 1:
            continue
        u = usage[0]
        # the record keeps only whether some stage was cut off; a decomposition that used every token it was allowed
        # was this one
        cut = u["tokens_out"] >= pipeline["decompose_tokens"]
        borrowed[r["id"]] = Generation(text=r["outputs"]["decompose"], tokens_in=u["tokens_in"],
                                       tokens_out=u["tokens_out"], seconds=u["seconds"], model=u["model"],
                                       cached=True, finish_reason="length" if cut else "stop")
    return borrowed
