"""Training sets from teacher traces, as chat examples ({"messages": [system, user, assistant]}).

Variants (the prompts are the ones the pipeline serves, from :mod:`divcon.pipeline.prompts`, so a student is trained on
exactly the prompt it later sees):

* ``sd-t``: decomposer distillation on every trace: decompose prompt -> the teacher's subquestions.
* ``sd-r``: the same, but only traces whose solution was correct (rejection sampling). When several samples of a
  question pass, every distinct decomposition is kept, or with ``best_only`` just one: the fewest subquestions, ties
  to the lowest sample number.
* ``se-t``: solver distillation: solve prompt with the trace's subquestions -> the teacher's full solution.
* ``se-a``: the same with the final answer replaced by the gold answer.
* ``sd-route``: a decomposer that also learns when not to decompose, from traces with both routes (``divcon distill
  generate --routes``). Per question: every distinct decomposition with which the two-stage route reached gold is a
  target; where only the single-stage route did, the target is "No decomposition needed." (once); where neither
  did, the question is dropped. At inference "No decomposition needed." sends the question to the solver's
  step-by-step prompt. Reasons: single-stage traces of a question the two-stage route solved are dropped as
  ``decomposition_won``; wrong traces as ``incorrect``.
* ``sd-route-cheap``: the router with ties to the cheaper route. A decomposition is a target only where the two-stage
  route reached gold more often (as a share of its samples) than the single-stage route did; where the single-stage
  route did at least as well and reached gold at least once, the target is "No decomposition needed.". Why: under
  ``sd-route`` a question both routes solve is taught as "decompose", so with a teacher that is better single-stage
  the student learns to decompose nearly everything (greedy decoding takes the majority first token), paying two
  teacher calls for answers one call gets. Two-stage traces of such questions are dropped as ``direct_won``.

Decomposer targets are re-rendered with :func:`format_subquestions` (not the raw output), so the student learns the
clean numbered form the parser reads back. A decomposer output that says "No decomposition needed." is a legitimate
target and is kept as that sentence; one with no parseable subquestion that does not say so is dropped from SD sets
(reason ``unparseable``). SE sets keep such traces: the solver was then given the step-by-step prompt, and that pair
is exactly what the pipeline serves in that case.

Every variant drops exact duplicates (same question, same prompt and target; reason ``duplicate``): with several
samples the teacher often repeats itself, and repeats would only re-weight those questions.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from divcon.pipeline import prompts as P
from divcon.runs import read_records, write_json
from divcon.tasks.answers import last_marker_end

ROUTERS = ("sd-route", "sd-route-cheap")  # decomposers trained on traces of both routes
VARIANTS = ("sd-t", "sd-r", "se-t", "se-a", *ROUTERS)
DROP_REASONS = ("error", "decomposition_won", "incorrect", "direct_won", "unparseable", "duplicate", "not_best")


def route_of(rec: dict) -> str:
    """A trace's route: "single" (solved step by step, no decomposer) or "two-stage" (traces from before routes)."""
    return rec.get("route", "two-stage")


def load_traces(traces: Path) -> list[dict]:
    """Records of a traces dir (``records.jsonl`` inside) or of a traces JSONL file."""
    if traces.is_dir():
        return read_records(traces)
    if not traces.exists():
        raise FileNotFoundError(f"no traces at {traces}")
    return [json.loads(line) for line in traces.read_text(encoding="utf-8").splitlines() if line.strip()]


def says_no_decomposition(text: str) -> bool:
    return P.NO_DECOMPOSITION.rstrip(".").lower() in (text or "").lower()


def with_gold_answer(solution: str, gold: str) -> str:
    """The solution with its final answer replaced by ``gold``: everything after the last answer marker ("The answer
    is", "Final answer:" ..., the same markers the scorer reads) becomes "<gold>." (anything the teacher wrote after
    its answer goes too, so the target ends on the answer). Without a marker, the answer line is appended."""
    end = last_marker_end(solution)
    if end is None:
        return f"{solution.rstrip()}\nThe answer is {gold}."
    return f"{solution[:end].rstrip()} {gold}."


def _decomposer_target(rec: dict) -> str | None:
    """The SD target text, or None when the output is unparseable."""
    if rec["subquestions"]:
        return P.format_subquestions(rec["subquestions"])
    if says_no_decomposition(rec["decomposer_output"]):
        return P.NO_DECOMPOSITION
    return None


def decomposition_won(records: list[dict], variant: str) -> set[str]:
    """The questions whose router target is a decomposition: under ``sd-route`` those some two-stage trace answered
    correctly; under ``sd-route-cheap`` those where the two-stage route's share of correct samples beat the
    single-stage route's (a tie goes to the cheaper, single-stage route). Traces the teacher could not run count as
    neither correct nor sampled."""
    right: Counter[tuple[str, str]] = Counter()
    tried: Counter[tuple[str, str]] = Counter()
    for r in records:
        if not r.get("error"):
            tried[r["id"], route_of(r)] += 1
            right[r["id"], route_of(r)] += bool(r["correct"])
    ids = {i for i, _ in tried}
    if variant == "sd-route":
        return {i for i in ids if right[i, "two-stage"]}

    def share(i: str, route: str) -> float:
        return right[i, route] / tried[i, route] if tried[i, route] else 0.0
    return {i for i in ids if share(i, "two-stage") > share(i, "single")}


def _example(rec: dict, variant: str, won: set[str]) -> tuple[list[dict], str] | str:
    """(prompt messages, target) for one trace, or the reason it is dropped (before de-duplication).
    ``won``: the questions whose router target is a decomposition (:func:`decomposition_won`)."""
    if rec.get("error"):  # the teacher could not run it (e.g. a prompt over its context window)
        return "error"
    if variant in ROUTERS and route_of(rec) == "single":
        if rec["id"] in won:
            return "decomposition_won"
        if not rec["correct"]:
            return "incorrect"
        return P.decompose_messages(rec["question"], rec["context"], rec["family"], rec["max_subquestions"]), \
            P.NO_DECOMPOSITION
    if variant in ("sd-t", "sd-r", *ROUTERS):
        if variant != "sd-t" and not rec["correct"]:
            return "incorrect"
        if variant in ROUTERS and rec["id"] not in won:
            return "direct_won"
        target = _decomposer_target(rec)
        if target is None:
            return "unparseable"
        prompt = P.decompose_messages(rec["question"], rec["context"], rec["family"], rec["max_subquestions"])
        return prompt, target
    # The teacher's solve style (traces from before styles existed used "short"); no demonstrations: a student is
    # served the bare prompt it was trained on.
    prompt = P.solve_messages(rec["question"], rec["context"], rec["family"], rec["subquestions"] or None,
                              style=rec.get("solve_style", "short"))
    target = rec["solution"] if variant == "se-t" else with_gold_answer(rec["solution"], rec["golds"][0])
    return prompt, target


def build_dataset(traces_dir: Path, variant: str, out_file: Path, best_only: bool = False) -> dict:
    """Write the training set ``out_file`` (JSONL) and ``<out_file minus suffix>.counts.json``; return the counts.

    Counts: ``traces``, ``questions``, ``kept``, ``kept_questions``, ``kept_no_decomposition`` (SD targets that are
    "No decomposition needed."), and ``dropped`` by reason: incorrect, unparseable, duplicate, not_best (the other
    passing samples under ``best_only``). Each dropped trace is counted once, under the first rule it fails, in that
    order.
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; variants: {', '.join(VARIANTS)}")
    if best_only and variant != "sd-r":
        raise ValueError("best_only applies to sd-r only (choosing one of several correct decompositions)")
    records = sorted(load_traces(Path(traces_dir)), key=lambda r: (r["id"], r["sample"]))
    if variant not in ROUTERS:  # the other variants are about the two-stage route only
        records = [r for r in records if route_of(r) == "two-stage"]
    elif not any(route_of(r) == "single" for r in records):
        raise ValueError(f"{variant} needs traces with both routes: make them with `divcon distill generate --routes`")
    won = decomposition_won(records, variant) if variant in ROUTERS else set()
    dropped: Counter[str] = Counter()
    candidates: list[tuple[dict, list[dict], str]] = []
    seen: set[str] = set()
    for rec in records:
        made = _example(rec, variant, won)
        if isinstance(made, str):
            dropped[made] += 1
            continue
        prompt, target = made
        key = json.dumps([rec["id"], prompt, target], ensure_ascii=False)
        if key in seen:
            dropped["duplicate"] += 1
            continue
        seen.add(key)
        candidates.append((rec, prompt, target))
    if best_only:
        best: dict[str, tuple[int, int]] = {}
        for rec, _, _ in candidates:
            rank = (len(rec["subquestions"]), rec["sample"])
            best[rec["id"]] = min(best.get(rec["id"], rank), rank)
        kept = [c for c in candidates if (len(c[0]["subquestions"]), c[0]["sample"]) == best[c[0]["id"]]]
        dropped["not_best"] += len(candidates) - len(kept)
        candidates = kept
    out_file = Path(out_file)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    with open(out_file, "w", encoding="utf-8") as f:
        for rec, prompt, target in candidates:
            row = {"messages": prompt + [{"role": "assistant", "content": target}], "id": rec["id"],
                   "sample": rec["sample"], "variant": variant}
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    counts = {
        "variant": variant, "best_only": best_only, "traces": len(records),
        "questions": len({r["id"] for r in records}), "kept": len(candidates),
        "kept_questions": len({rec["id"] for rec, _, _ in candidates}),
        "kept_no_decomposition": sum(1 for _, _, t in candidates
                                     if variant.startswith("sd") and t == P.NO_DECOMPOSITION),
        "dropped": {r: dropped[r] for r in DROP_REASONS if dropped[r]},
        # routers: questions whose target is a decomposition / "No decomposition needed." / none (neither route won)
        **({"route_questions": {
            "decompose": len({rec["id"] for rec, _, t in candidates if t != P.NO_DECOMPOSITION}),
            "direct": len({rec["id"] for rec, _, t in candidates if t == P.NO_DECOMPOSITION}),
            "neither": len({r["id"] for r in records}) - len({rec["id"] for rec, _, _ in candidates})}}
           if variant in ROUTERS else {}),
        "out": str(out_file),
    }
    write_json(out_file.with_suffix(".counts.json"), counts)
    return counts
