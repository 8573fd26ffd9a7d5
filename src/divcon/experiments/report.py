"""Reports from run files: a table per task with bootstrap CIs, tokens and dollars, a quality-vs-cost plot with the
Pareto front, a static-vs-dynamic token comparison, and notes on data splits and scoring.

Only ``config.json`` and ``records.jsonl`` are read and every number is recomputed with
:func:`divcon.evaluate.summarize`, so a report can never disagree with the records (a stale ``summary.json`` from an
interrupted run is ignored), and price-table changes show up on the next report without re-running anything.
Output: ``report.md``, ``report.html`` (self-contained: inline CSS, the plot as base64), ``quality_vs_cost.png`` and
``report.json`` (the numbers behind all of it). Paths in the output are relative to the report folder, so a
committed report names no machine's directories and still leads to its runs.
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from divcon.cost import load_table
from divcon.backends.base import accounting_name
from divcon.evaluate import big_model, summarize
from divcon.experiments.grid import derived_label, read_grid_json, short_name
from divcon.pipeline.prompts import NO_DECOMPOSITION
from divcon.experiments.stats import bootstrap_ci, paired_diff_ci, pareto_front
from divcon.runs import read_records, write_json

Block = tuple  # ("h1"|"h2"|"h3"|"p", text) | ("table", headers, rows) | ("img", filename)

SPLIT_NOTES = {
    "drop": "the `eval` part of a passage-hashed split of DROP dev (sha256 of the passage); decomposers are distilled "
            "on the `distill` part; no passage is in both",
    "bamboogle": "the `eval` part of a question-hashed split (sha256 of the question); decomposers are distilled on "
                 "the `distill` part; no question is in both",
    "gsm8k": "the official test split; decomposers are distilled on the train split",
}


@dataclass
class Run:
    run_dir: Path
    config: dict
    records: list[dict]
    label: str


def grid_labels(run_dir: Path) -> dict[Path, str]:
    """Cell labels from a ``grid.json`` next to the run dir (the grid dir is the run dir's grandparent)."""
    out: dict[Path, str] = {}
    for d in (run_dir.parent.parent, run_dir.parent):
        if (d / "grid.json").exists():
            out.update({Path(e["run_dir"]): e["label"] for e in read_grid_json(d)["cells"]})
    return out


def load_run(run_dir: Path) -> Run:
    run_dir = run_dir.resolve()
    cfg = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
    label = grid_labels(run_dir).get(run_dir) or derived_label(cfg)
    return Run(run_dir, cfg, read_records(run_dir), label)


def _rel(path: Path, out_dir: Path) -> str:
    """``path`` as seen from the report folder, with POSIX separators: report.json is committed and read on other
    machines, where this machine's absolute paths mean nothing (and reveal its layout)."""
    return Path(os.path.relpath(path.resolve(), out_dir.resolve())).as_posix()


def _fmt_money(x: float | None) -> str:
    """None is a cost that cannot be known (a model with no price); printing it as 0 would flatter the row."""
    return "unpriced" if x is None else f"{x:.3g}"


def _per_question(x: float | None, n: int) -> float | None:
    return None if x is None else x / n


def _row(run: Run, summary: dict, big: str | None, out_dir: Path) -> dict[str, Any]:
    primary = summary["primary"]
    values = [r["metrics"].get(primary, 0.0) for r in run.records]
    lo, hi = bootstrap_ci(values)
    n = summary["n"]
    # summarize() already leaves an unpriced model's dollars (and those of every total it is part of) as None
    unpriced, by_model, by_stage = summary["unpriced"], summary["by_model"], summary["by_stage"]
    others = {m: u for m, u in by_model.items() if m != big}
    bm = by_model.get(big, {"tokens_in": 0, "tokens_out": 0, "dollars": 0.0, "seconds": 0.0})
    big_dollars, dollars = summary["big_model_dollars"], summary["dollars"]
    return {
        "label": run.label, "run_dir": _rel(run.run_dir, out_dir), "task": summary["task"],
        "split": summary["split"], "mode": summary["mode"], "decomposer": summary["decomposer"],
        "solver": summary["solver"], "n": n, "pipeline": run.config.get("pipeline") or {},
        # examples the runner could not run (prompt past the context window, ...): scored 0, so they must be visible
        "errors": summary["errors"],
        "primary": primary, "metric": summary["metrics"].get(primary, 0.0), "ci95": [lo, hi],
        "extra_metrics": {k: v for k, v in summary["metrics"].items() if k != primary},
        "by_model": by_model, "by_stage": by_stage, "unpriced": unpriced,
        "big_tokens_in": bm["tokens_in"], "big_tokens_out": bm["tokens_out"],
        "other_tokens_in": sum(u["tokens_in"] for u in others.values()),
        "other_tokens_out": sum(u["tokens_out"] for u in others.values()),
        "tokens_per_question": (summary["tokens_in"] + summary["tokens_out"]) / n,
        "big_tokens_per_question": (bm["tokens_in"] + bm["tokens_out"]) / n,
        "big_dollars": big_dollars, "big_dollars_per_question": _per_question(big_dollars, n), "dollars": dollars,
        "model_seconds": summary["model_seconds"],
        "model_seconds_per_question": summary["model_seconds"] / n,
        "wall_seconds_per_question": summary["wall_seconds"] / n, "answer_source": summary["answer_source"],
        "calls_per_question": sum(u["calls"] for u in by_model.values()) / n,
        # the paper's cost per unit of quality: every token spent, over the questions (or F1) it got right
        "tokens_per_correct": (summary["tokens_in"] + summary["tokens_out"]) / (summary["metrics"][primary] * n)
        if summary["metrics"].get(primary) else None,
        # divcon's headline: what the big model spends per correct answer (the part a smaller decomposer replaces)
        "big_tokens_per_correct": (bm["tokens_in"] + bm["tokens_out"]) / (summary["metrics"][primary] * n)
        if summary["metrics"].get(primary) else None,
        "questions_per_hour": summary.get("questions_per_hour"),
        "mean_subquestions": summary["mean_subquestions"], "no_subquestions": summary["no_subquestions"],
        "truncated": summary["truncated"],
    }


def _paired(runs: list[Run], rows: list[dict], baselines: Sequence[str]) -> list[str]:
    """Give each row its paired difference to each baseline row (by label) on the questions both answered:
    ``paired`` = [{label, diff, ci95, n}], None in the place of the row's own label. Returns the baselines this task
    has (a label with no row here is left out), in the order given."""
    primary = rows[0]["primary"]
    by_label = {row["label"]: run for run, row in zip(runs, rows)}
    present = [b for b in baselines if b in by_label]
    for row in rows:
        row["paired"] = []
    for label in present:
        base = by_label[label]
        ref = {r["id"]: r["metrics"].get(primary, 0.0) for r in base.records}
        for run, row in zip(runs, rows):
            if run is base:
                row["paired"].append(None)
                continue
            mine = {r["id"]: r["metrics"].get(primary, 0.0) for r in run.records}
            ids = sorted(set(mine) & set(ref))
            diff, lo, hi = paired_diff_ci([mine[i] for i in ids], [ref[i] for i in ids])
            row["paired"].append({"label": label, "diff": diff, "ci95": [lo, hi], "n": len(ids)})
    return present


def _priced(rows: list[dict]) -> list[int]:
    """Indices of the rows with a big-model cost: only they have a place on the cost axis and in the Pareto front (an
    unpriced row drawn at $0 would sit on the front for free)."""
    return [i for i, r in enumerate(rows) if r["big_dollars_per_question"] is not None]


def _unpriced_note(rows: list[dict]) -> str | None:
    """The sentence naming the rows left off the plot and front, with the models that have no price."""
    left = [r for r in rows if r["big_dollars_per_question"] is None]
    if not left:
        return None
    return ("No big-model cost (a model without a price), so left out of the quality-vs-cost plot and the Pareto "
            "front: "
            + "; ".join(f"{r['label']} ({r['task']}; unpriced: {', '.join(r['unpriced']) or '-'})" for r in left)
            + ". Add them to the price table (resources/prices.json or $DIVCON_PRICES) to place them.")


def _num(x: float | None, fmt: str) -> str:
    """A number for a table, "-" where there is none (e.g. per correct answer of a row that got none right)."""
    return "-" if x is None else format(x, fmt)


DEMONSTRATIONS = ("shots", "decompose_shots")  # prompt settings a static and a dynamic row must share to be compared


def _static_vs_dynamic(rows: list[dict]) -> list[dict]:
    """Two-stage and dynamic rows with the same decomposer, solver and demonstrations, paired: per-question tokens
    and the ratio dynamic/static (the paper's point that interleaving costs more tokens)."""
    def same(a: dict, b: dict) -> bool:
        return ((a["decomposer"], a["solver"]) == (b["decomposer"], b["solver"])
                and all(a["pipeline"].get(k, 0) == b["pipeline"].get(k, 0) for k in DEMONSTRATIONS))

    pairs = []
    for s in (r for r in rows if r["mode"] == "two-stage"):
        for d in (r for r in rows if r["mode"] == "dynamic"):
            if same(s, d):
                def ratio(key: str) -> float | None:
                    return d[key] / s[key] if s[key] else None

                pairs.append({
                    "decomposer": s["decomposer"], "solver": s["solver"], "static_label": s["label"],
                    "dynamic_label": d["label"], "static_metric": s["metric"], "dynamic_metric": d["metric"],
                    "static_tokens_per_question": s["tokens_per_question"],
                    "dynamic_tokens_per_question": d["tokens_per_question"],
                    "tokens_ratio": ratio("tokens_per_question"),
                    "static_big_tokens_per_question": s["big_tokens_per_question"],
                    "dynamic_big_tokens_per_question": d["big_tokens_per_question"],
                    "big_tokens_ratio": ratio("big_tokens_per_question"),
                    **{f"{side}_{k}": row[k] for side, row in (("static", s), ("dynamic", d))
                       for k in ("calls_per_question", "tokens_per_correct", "questions_per_hour")},
                })
    return pairs


# Why a report counts the questions a decomposer gave no subquestions (shared with benchmarks/bench_distill.py).
NO_SUBQUESTIONS_NOTE = (f"A question with none (the decomposer wrote \"{NO_DECOMPOSITION}\" or nothing parseable) is "
                        "solved as if single-stage, so a row with many such questions measures its solver more than "
                        "its decomposer.")


def _label_lifts(ax, xs: list[float], ys: list[float], labels: list[str], line_pt: float = 9.0) -> list[float]:
    """Points by which to raise each label so that no two overlap: cells close in cost and quality (S/S and S single,
    say) otherwise print their names on top of each other. Greedy, in the order given; sizes are estimated from the
    font size, which is enough for short labels."""
    fig = ax.figure
    width_pt, height_pt = (ax.get_window_extent().size / fig.dpi * 72).tolist()
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    placed: list[tuple[float, float, float, float]] = []
    lifts = []
    for x, y, label in zip(xs, ys, labels):
        left = (x - x0) / (x1 - x0) * width_pt + 4
        right = left + 4.2 * len(label)  # ~0.6 em per character at 7 pt
        base = (y - y0) / (y1 - y0) * height_pt + 4
        lift = 0.0
        while any(left < r and x0 < right and base + lift < t and b < base + lift + line_pt
                  for x0, b, r, t in placed):
            lift += line_pt
        placed.append((left, base + lift, right, base + lift + line_pt))
        lifts.append(lift)
    return lifts


def _plot(tasks: list[dict], big: str | None, path: Path) -> None:
    """One panel per task: big-model $ per question against the primary metric, 95% CI bars, Pareto front as a
    line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    peak = max((t["rows"][i]["big_dollars_per_question"] for t in tasks for i in _priced(t["rows"])), default=0.0)
    exp = math.floor(math.log10(peak)) if peak > 0 else 0  # local-model dollars are ~1e-6: one readable scale
    ncols = min(3, len(tasks))
    nrows = -(-len(tasks) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.2 * ncols, 4.2 * nrows), squeeze=False)
    for ax, t in zip(axes.flat, tasks):
        shown = _priced(t["rows"])
        rows = [t["rows"][i] for i in shown]
        xs = [r["big_dollars_per_question"] / 10**exp for r in rows]
        ys = [r["metric"] for r in rows]
        err = [[y - r["ci95"][0] for y, r in zip(ys, rows)], [r["ci95"][1] - y for y, r in zip(ys, rows)]]
        ax.errorbar(xs, ys, yerr=err, fmt="none", ecolor="0.75", elinewidth=1, capsize=2)
        front = set(t["pareto"])
        span = max(xs, default=0.0) or 1.0
        ax.set_xlim(-0.05 * span, 1.35 * span)  # room on the right for the labels of the costliest points
        for i, x, y in zip(shown, xs, ys):
            ax.scatter([x], [y], marker="o" if i in front else "s", s=40, zorder=3,
                       color="tab:red" if i in front else "tab:blue")
        labels = [r["label"] for r in rows]
        for x, y, label, lift in zip(xs, ys, labels, _label_lifts(ax, xs, ys, labels)):
            ax.annotate(label, (x, y), textcoords="offset points", xytext=(4, 4 + lift), fontsize=7)
        ax.plot([xs[shown.index(i)] for i in t["pareto"]], [ys[shown.index(i)] for i in t["pareto"]],
                color="tab:red", lw=1.2, zorder=2, label="Pareto front")
        if not rows:
            ax.text(0.5, 0.5, "no priced rows", ha="center", va="center", transform=ax.transAxes, color="0.5")
        ax.set_title(f"{t['task']} ({t['split']})")
        ax.set_xlabel("big-model $ per question" + (f" (x1e{exp})" if exp else "") + f", {short_name(big)}")
        ax.set_ylabel(t["primary"])
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    for ax in list(axes.flat)[len(tasks):]:
        ax.set_visible(False)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def _task_blocks(t: dict, big: str | None) -> list[Block]:
    p = t["primary"]
    blocks: list[Block] = [("h2", f"{t['task']} (split {t['split']})")]
    baselines = t["baselines"]
    rows = []
    for r in t["rows"]:
        extra = ", ".join(f"{k} {v:.3f}" for k, v in r["extra_metrics"].items()) or "-"
        paired = [f"{vs['diff']:+.3f} [{vs['ci95'][0]:+.3f}, {vs['ci95'][1]:+.3f}]"
                  + (f" (n={vs['n']})" if vs["n"] != r["n"] else "") if vs else "(baseline)"
                  for vs in r["paired"]]
        rows.append([r["label"], r["mode"], short_name(r["decomposer"]), short_name(r["solver"]), str(r["n"]),
                     str(r["errors"]), f"{r['metric']:.3f} [{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}]", *paired, extra,
                     f"{r['tokens_per_question']:.0f}",
                     f"{r['big_tokens_in']}/{r['big_tokens_out']}", f"{r['other_tokens_in']}/{r['other_tokens_out']}",
                     _fmt_money(r["big_dollars"]), _fmt_money(r["dollars"]), f"{r['model_seconds']:.1f}",
                     f"{r['model_seconds_per_question']:.2f}"])
    blocks.append(("table", ["label", "mode", "decomposer", "solver", "n", "errors", f"{p} [95% CI]",
                             *[f"vs {b}, paired [95% CI]" for b in baselines],
                             "extra (not primary)", "tokens/question (all models)",
                             f"big-model tokens in/out ({short_name(big)})", "other models tokens in/out",
                             "big-model $", "total $", "model s", "model s/question"], rows))
    if baselines:
        blocks.append(("p", f"A paired column is the row's {p} minus that of its baseline row "
                            f"({', '.join(baselines)}) on the questions both answered, "
                            "with a bootstrap interval that resamples questions (2000 resamples, seeded)."))
    if t["pareto"]:
        blocks.append(("p", "Pareto front (big-model $ per question vs " + p + "): "
                       + ", ".join(t["rows"][i]["label"] for i in t["pareto"]) + "."))
    note = _unpriced_note(t["rows"])
    if note:
        blocks.append(("p", note))
    blocks.append(("h3", "Tokens by model"))
    blocks.append(("table", ["label", "model", "tokens in", "tokens out", "calls", "model s", "$"],
                   [[r["label"], m, str(u["tokens_in"]), str(u["tokens_out"]), str(u["calls"]), f"{u['seconds']:.1f}",
                     _fmt_money(u["dollars"])] for r in t["rows"] for m, u in r["by_model"].items()]))
    blocks.append(("h3", "Cost per answer"))
    blocks.append(("p", f"Tokens over the questions answered right (the sum of {p}, so a row that is right more often "
                        "pays less per right answer); questions/hour is the run's own throughput, wall clock, and "
                        "\"-\" where some of its calls came from the call cache (they took no time in that run)."))
    blocks.append(("table", ["label", "calls/question", f"tokens per correct ({p}), all models",
                             f"big-model tokens per correct ({short_name(big)})", "questions/hour"],
                   [[r["label"], f"{r['calls_per_question']:.2f}", _num(r["tokens_per_correct"], ".0f"),
                     _num(r["big_tokens_per_correct"], ".0f"), _num(r["questions_per_hour"], ".0f")]
                    for r in t["rows"]]))
    two_stage = [r for r in t["rows"] if r["mode"] == "two-stage"]
    if two_stage:
        blocks.append(("h3", "Decompositions"))
        blocks.append(("p", f"Subquestions the solver received. {NO_SUBQUESTIONS_NOTE} The last column counts "
                            "questions where some stage's output was cut off at the token limit."))
        blocks.append(("table", ["label", "decomposer", "subquestions per question", "questions with none",
                                 "questions with a truncated output"],
                       [[r["label"], short_name(r["decomposer"]), f"{r['mean_subquestions']:.2f}",
                         f"{r['no_subquestions']} of {r['n']}", str(r["truncated"])] for r in two_stage]))
    if t["static_vs_dynamic"]:
        blocks.append(("h3", "Static (two-stage) vs dynamic"))
        blocks.append(("table", ["static", "dynamic", "decomposer", "solver", f"static {p}", f"dynamic {p}",
                                 "static tokens/q", "dynamic tokens/q", "ratio dynamic/static", "big-model ratio"],
                       [[s["static_label"], s["dynamic_label"], short_name(s["decomposer"]), short_name(s["solver"]),
                         f"{s['static_metric']:.3f}",
                         f"{s['dynamic_metric']:.3f}", f"{s['static_tokens_per_question']:.0f}",
                         f"{s['dynamic_tokens_per_question']:.0f}",
                         f"{s['tokens_ratio']:.2f}" if s["tokens_ratio"] is not None else "-",
                         f"{s['big_tokens_ratio']:.2f}" if s["big_tokens_ratio"] is not None else "-"]
                        for s in t["static_vs_dynamic"]]))

        blocks.append(("table", ["static", "dynamic", "calls/q static", "calls/q dynamic",
                                 f"tokens per correct ({p}) static", "dynamic", "questions/hour static", "dynamic"],
                       [[s["static_label"], s["dynamic_label"],
                         *(_num(s[f"{side}_calls_per_question"], ".2f") for side in ("static", "dynamic")),
                         *(_num(s[f"{side}_tokens_per_correct"], ".0f") for side in ("static", "dynamic")),
                         *(_num(s[f"{side}_questions_per_hour"], ".0f") for side in ("static", "dynamic"))]
                        for s in t["static_vs_dynamic"]]))
    return blocks


def _notes(tasks: list[dict], big: str | None, empty: list[str]) -> list[Block]:
    splits = []
    for t in tasks:
        note = SPLIT_NOTES.get(t["task"]) if t["split"] in ("eval", "test") else None
        if note is None and t["split"] in ("eval", "distill"):
            note = f"the `{t['split']}` part of a question-hashed split (sha256 of the question)"
        splits.append([t["task"], t["split"], str(max(r["n"] for r in t["rows"])), note or f"split `{t['split']}`"])
    blocks: list[Block] = [
        ("h2", "Data splits"),
        ("p", "DROP is evaluated on the `eval` part of a passage-hashed split of its dev set (sha256 of the passage) "
              "and decomposers are distilled on the `distill` part; the parts never overlap, so no passage is on "
              "both sides. Bamboogle likewise, split by question hash. GSM8K is evaluated on test and distilled on "
              "train (see `divcon.tasks.datasets.hash_part`)."),
        ("table", ["task", "split", "n (largest run)", "what it is"], splits),
        ("h2", "Scoring"),
        ("p", "Strict extraction: the answer is read after the final-answer marker (\"The answer is ...\", "
              "\"Final answer:\", ####, \\boxed{}); numeric tasks fall back to the last number in the output. The "
              "primary metric scores only that extracted answer; its interval is a seeded percentile bootstrap "
              "(2000 resamples) over questions. The lenient figure (the gold appears anywhere in the output, the "
              "paper's lenient scoring) is an extra column and never the primary number. The errors column counts "
              "questions that could not be run at all (a prompt longer than the model's context, say): they score 0 "
              "and stay in n."),
        ("h2", "Cost"),
        ("p", f"The big model is the most expensive model across this report ({big or 'none'}). Local models are "
              "priced as in the paper, reference $ x parameters / reference parameters (`resources/prices.json`, "
              "override with $DIVCON_PRICES); a model with neither a price nor a known size is shown as "
              "\"unpriced\", never as $0, and a row whose big model is unpriced has no place on the cost axis. "
              "Calls answered from the shared call cache count the tokens and seconds of their original "
              "computation, so a stage shared by two cells costs each what it would have cost alone. Model seconds "
              "are the models' own generation time as logged with each call (so a cached re-run reports the same "
              "figure); the wall time of the run itself, which shrinks on cached re-runs, is in report.json "
              "(wall_seconds_per_question)."),
    ]
    if empty:
        blocks.append(("p", "Run dirs with no records yet, left out: " + ", ".join(empty) + "."))
    return blocks


def _md_row(cells: list[str]) -> str:
    return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"


def _md(blocks: list[Block]) -> str:
    out = []
    for b in blocks:
        if b[0] in ("h1", "h2", "h3"):
            out.append("#" * int(b[0][1]) + " " + b[1])
        elif b[0] == "p":
            out.append(b[1])
        elif b[0] == "img":
            out.append(f"![quality vs cost]({b[1]})")
        else:
            out.append("\n".join([_md_row(b[1]), "|" + "---|" * len(b[1])] + [_md_row(r) for r in b[2]]))
    return "\n\n".join(out) + "\n"


CSS = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:0.85em}
th,td{border:1px solid #ccc;padding:3px 7px;text-align:left}
th{background:#f2f2f2}tr:nth-child(even) td{background:#fafafa}img{max-width:100%}code{background:#f4f4f4}"""


def _html(blocks: list[Block], title: str, out_dir: Path) -> str:
    body = []
    for b in blocks:
        if b[0] in ("h1", "h2", "h3", "p"):
            body.append(f"<{b[0]}>{html.escape(b[1])}</{b[0]}>")
        elif b[0] == "img":
            data = base64.b64encode((out_dir / b[1]).read_bytes()).decode("ascii")
            body.append(f'<img alt="quality vs cost" src="data:image/png;base64,{data}">')
        else:
            head = "".join(f"<th>{html.escape(h)}</th>" for h in b[1])
            rows = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in b[2])
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def build_report(run_dirs: list[Path], out_dir: Path, title: str = "divcon report",
                 baselines: Sequence[str] = ()) -> dict[str, Any]:
    """Write the report files for ``run_dirs`` into ``out_dir`` and return the numbers (also in report.json).

    Rows keep the order of ``run_dirs`` (grid order); tasks appear in order of first appearance. With a
    ``baselines`` (row labels), every row of a task gets its paired difference to each of them that the task has.
    """
    if isinstance(baselines, str):  # a label where labels are due would pair with its letters, silently
        raise TypeError(f"baselines is a list of row labels, got the string {baselines!r}")
    seen: set[Path] = set()
    runs = []
    for d in run_dirs:
        if d.resolve() not in seen:
            seen.add(d.resolve())
            runs.append(load_run(d))
    empty = [_rel(r.run_dir, out_dir) for r in runs if not r.records]
    runs = [r for r in runs if r.records]
    if not runs:
        raise ValueError("none of the run dirs holds any record yet")
    prices = load_table()
    big = big_model(sorted({accounting_name(u["model"]) for r in runs for rec in r.records
                            for u in rec.get("usage") or []}), prices)

    by_task: dict[tuple[str, str], list[tuple[Run, dict]]] = {}
    for run in runs:
        summary = summarize(run.records, {**run.config, "run_dir": str(run.run_dir)}, prices, big)
        row = _row(run, summary, big, out_dir)
        by_task.setdefault((summary["task"], summary["split"]), []).append((run, row))
    tasks = []
    for (task, split), pairs in by_task.items():
        rows = [row for _, row in pairs]
        present = _paired([run for run, _ in pairs], rows, baselines)
        shown = _priced(rows)
        tasks.append({"task": task, "split": split, "primary": rows[0]["primary"], "baselines": present, "rows": rows,
                      "pareto": [shown[i] for i in pareto_front([(rows[j]["big_dollars_per_question"],
                                                                     rows[j]["metric"]) for j in shown])],
                      "static_vs_dynamic": _static_vs_dynamic(rows)})

    out_dir.mkdir(parents=True, exist_ok=True)
    _plot(tasks, big, out_dir / "quality_vs_cost.png")
    blocks: list[Block] = [("h1", title), ("img", "quality_vs_cost.png")]
    note = _unpriced_note([r for t in tasks for r in t["rows"]])
    if note:
        blocks.append(("p", note))
    for t in tasks:
        blocks += _task_blocks(t, big)
    blocks += _notes(tasks, big, empty)
    (out_dir / "report.md").write_text(_md(blocks), encoding="utf-8")
    (out_dir / "report.html").write_text(_html(blocks, title, out_dir), encoding="utf-8")
    unpriced = sorted({m for t in tasks for r in t["rows"] for m in r["unpriced"]})
    data = {"title": title, "big_model": big, "unpriced": unpriced, "tasks": tasks, "empty_runs": empty}
    write_json(out_dir / "report.json", data)
    return data
