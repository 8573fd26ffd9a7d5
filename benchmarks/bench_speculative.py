"""Benchmark (not a test): does speculative decoding in llama-server raise the teacher's output tokens/s here?

    python benchmarks/bench_speculative.py [--n 8] [--slots 1,8] [--variants none,ngram-simple,draft-0.5b]
    python benchmarks/bench_speculative.py --report-only

The workload is the T/T solver's real requests: the first ``--n`` GSM8K test questions with the subquestions the
teacher wrote for them in ``reports/bench_throughput/runs/T-T/seq`` (the solver restates each subquestion before
answering it, the best case for n-gram drafting), greedy, up to 512 tokens each, all sent at once to a server with
``--slots`` slots. Variants are llama-server's own speculative decoders: ``none``; ``ngram-simple`` (drafts from
n-grams already in the context, no draft model); ``draft-0.5b`` (the embedded Qwen2.5-Coder-0.5B, same tokenizer
family, drafting 3 tokens). One run file per (variant, slots) under ``<out>/runs/``, written when its batch is done,
so an interrupted run resumes; the report (markdown + JSON) is computed from those files only: output tokens/s,
wall seconds, the drafts' acceptance rate from the server's log, and the share of outputs identical to ``none``.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from openai import OpenAI

from divcon.backends.engine import LlamaServer
from divcon.backends.registry import resolve_gguf
from divcon.pipeline import prompts as P

TEACHER, DRAFT = "qwen2.5-1.5b", "qwen2.5-0.5b"
SOURCE = Path("reports/bench_throughput/runs/T-T/seq/records.jsonl")
DEFAULT_OUT = Path("reports/bench_speculative")
VARIANTS = {"none": [], "ngram-simple": ["--spec-type", "ngram-simple"],
            "draft-0.5b": ["--spec-type", "draft-simple", "-md", "{draft}", "--spec-draft-n-max", "3"]}
ACCEPTANCE = re.compile(r"draft acceptance = [\d.]+ \(\s*(\d+) accepted /\s*(\d+) generated\)")


class SpeculativeServer(LlamaServer):
    """divcon's llama-server (same flags, lifecycle and clean-up) with a speculative decoder added."""

    def __init__(self, variant: str, slots: int):
        super().__init__(resolve_gguf(TEACHER), slots=slots)
        self.extra = [a.replace("{draft}", str(resolve_gguf(DRAFT))) for a in VARIANTS[variant]]

    def argv(self, binary: Path, port: int) -> list[str]:
        return super().argv(binary, port) + self.extra


def solver_requests(n: int) -> list[list[dict]]:
    records = [json.loads(line) for line in SOURCE.read_text(encoding="utf-8").splitlines()][:n]
    return [P.solve_messages(r["question"], None, "math", r["subquestions"], 0, "working") for r in records]


def run_one(variant: str, slots: int, requests: list[list[dict]]) -> dict:
    server = SpeculativeServer(variant, slots).start()
    try:
        client = OpenAI(base_url=server.base_url, api_key="none", timeout=3600, max_retries=0)

        def ask(messages: list[dict]):
            return client.chat.completions.create(model=TEACHER, messages=messages, max_tokens=512, temperature=0)

        t0 = time.monotonic()
        with ThreadPoolExecutor(slots) as pool:
            answers = list(pool.map(ask, requests))
        wall = time.monotonic() - t0
    finally:
        server.stop()
    accepted = generated = 0
    for a, g in ACCEPTANCE.findall(server.log_path.read_text(errors="replace")):
        accepted, generated = accepted + int(a), generated + int(g)
    return {"variant": variant, "slots": slots, "n": len(requests), "wall_s": round(wall, 2),
            "tokens_out": sum(a.usage.completion_tokens for a in answers),
            "tokens_in": sum(a.usage.prompt_tokens for a in answers),
            "draft_accepted": accepted, "draft_generated": generated,
            "outputs": [a.choices[0].message.content for a in answers]}


def report(out: Path) -> Path:
    runs = [json.loads(p.read_text(encoding="utf-8")) for p in sorted((out / "runs").glob("*.json"))]
    base = {r["slots"]: r for r in runs if r["variant"] == "none"}
    rows = []
    for r in sorted(runs, key=lambda r: (r["slots"], list(VARIANTS).index(r["variant"]))):
        b = base.get(r["slots"])
        rows.append({"variant": r["variant"], "slots": r["slots"], "n": r["n"], "wall_s": r["wall_s"],
                     "tokens_out": r["tokens_out"], "out_tok_s": round(r["tokens_out"] / r["wall_s"], 1),
                     "vs_none": round(r["tokens_out"] / r["wall_s"] / (b["tokens_out"] / b["wall_s"]), 2) if b
                     else None,
                     "acceptance": round(r["draft_accepted"] / r["draft_generated"], 2) if r["draft_generated"]
                     else None,
                     "identical_to_none": round(sum(x == y for x, y in zip(r["outputs"], b["outputs"])) / r["n"], 2)
                     if b else None})
    lines = ["# Speculative decoding in llama-server, teacher Qwen2.5-Coder-1.5B on 2 CPU cores", "",
             f"Made by `python benchmarks/bench_speculative.py` (resumable; `--report-only` rewrites this report from "
             f"the run files). Workload: the T/T solver's requests for the first GSM8K test questions, with the "
             f"subquestions the teacher wrote in `{SOURCE.parent}`, greedy, <= 512 tokens, all sent at once.", "",
             "| variant | slots | n | wall s | tokens out | output tokens/s | vs none | draft acceptance "
             "| outputs identical to none |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['variant']} | {r['slots']} | {r['n']} | {r['wall_s']:.0f} | {r['tokens_out']} | "
                     f"{r['out_tok_s']} | {r['vs_none'] if r['vs_none'] is not None else '-'}x | "
                     f"{r['acceptance'] if r['acceptance'] is not None else '-'} | "
                     f"{r['identical_to_none'] if r['identical_to_none'] is not None else '-'} |")
    lines += ["", "vs none: output tokens/s over the `none` row with the same slots. Draft acceptance: accepted over "
              "drafted tokens, summed from the server's log."]
    (out / "report.json").write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--slots", default="1,8")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--report-only", action="store_true")
    args = ap.parse_args()
    if not args.report_only:
        requests = solver_requests(args.n)
        (args.out / "runs").mkdir(parents=True, exist_ok=True)
        for slots in (int(s) for s in args.slots.split(",")):
            for variant in args.variants.split(","):
                path = args.out / "runs" / f"{variant}-s{slots}.json"
                if path.exists() and json.loads(path.read_text(encoding="utf-8"))["n"] == args.n:
                    continue
                result = run_one(variant, slots, requests)
                path.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
                print(f"{variant} slots={slots}: {result['tokens_out'] / result['wall_s']:.1f} output tokens/s",
                      flush=True)
    print(report(args.out))


if __name__ == "__main__":
    main()
