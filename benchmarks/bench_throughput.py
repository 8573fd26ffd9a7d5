"""Benchmark (not a test): questions per hour, sequential in-process decoding vs questions in flight on llama.cpp's
batching server, on the same GSM8K test questions.

    python benchmarks/bench_throughput.py [--n 64] [--concurrency 4,8,16] [--rows T/T,SD-R/T] [--stop-after MIN]
    python benchmarks/bench_throughput.py --report-only

Each (row, setting) pair is one run dir under ``<out>/runs/<row>/<setting>/`` with its own call log (outside the
repository, in the cache dir), so no setting is served from another's cache and an interrupted run resumes from its
own. ``seq`` is today's path: the in-process llama-cpp-python engine, one question at a time. ``cN`` is the
llama-server engine with N slots and N questions in flight. The report (markdown + JSON) is computed from the run
files only: questions/hour over the time the run was busy, prompt and decode tokens per second, prompt tokens the
engine reused from its KV cache, EM with a bootstrap interval, the share of outputs identical to ``seq``, and
divcon's own share of each question's wall time (everything that is not a model call).
"""

from __future__ import annotations

import argparse
import json
import os
import re
from pathlib import Path

from divcon.backends.engine import server_binary, server_env
from divcon.evaluate import busy_seconds, evaluate
from divcon.experiments.stats import bootstrap_ci
from divcon.paths import cache_dir
from divcon.pipeline import PipelineConfig
from divcon.runner import StopWhen
from divcon.runs import read_records, write_json

TEACHER = "llamacpp:qwen2.5-1.5b"
# the SD-R student of the committed runs was the zero-shot one, deleted when bench_distill was remade with today's
# prompts: --report-only still rewrites the report from its runs; a new SD-R/T run needs the remade student
STUDENT_SDR = "llamacpp:smollm2-135m,lora=reports/bench_distill/students/sd-r"
DEFAULT_OUT = Path("reports/bench_throughput")
ROWS = {"T/T": (TEACHER, TEACHER), "SD-R/T": (STUDENT_SDR, TEACHER)}
# The prompts the committed runs were made with (a speed benchmark keeps its workload when the default prompts move)
PIPELINE = PipelineConfig(mode="two-stage", solve_style="working")


def engine_spec(spec: str, setting: str) -> str:
    if setting == "seq":
        return f"{spec},engine=inproc"
    return f"{spec},engine=server,slots={int(setting[1:])}"


def run_dir(out: Path, row: str, setting: str) -> Path:
    return out / "runs" / row.replace("/", "-") / setting


def build_stamp(setting: str) -> dict:
    """The llama.cpp build a setting runs on: the CPU kernels the in-process library was compiled with (its own
    system info), or the CMake flags scripts/setup.sh stamped beside llama-server. Kept in each run dir so a resumed
    run never continues on another build and the report can say which build made each number."""
    if setting == "seq":
        import llama_cpp

        info = llama_cpp.llama_print_system_info().decode()
        return {"engine": "inproc", "kernels": sorted(re.findall(r"\b(AVX\w*|AMX\w*) = 1", info))}
    server = server_binary()
    stamp = server.with_name(server.name + ".cmake-args") if server else None
    flags = stamp.read_text() if stamp and stamp.is_file() else ""
    return {"engine": "server", "kernels": sorted(re.findall(r"-DGGML_(AVX\w*|AMX\w*)=ON", flags)),
            "omp_wait_policy": server_env()["OMP_WAIT_POLICY"]}


def build_label(run: Path) -> str:
    path = run / "build.json"
    if not path.is_file():
        return "not recorded"
    stamp = json.loads(path.read_text())
    label = "+".join(stamp["kernels"]) if stamp["kernels"] else "no AVX kernels"
    if stamp["engine"] == "server":
        label += f"; OpenMP wait {stamp.get('omp_wait_policy', 'ACTIVE (spinning, before divcon set it)').lower()}"
    return label


def run(out: Path, row: str, setting: str, n: int, stop: StopWhen) -> None:
    dec, sol = ROWS[row]
    where = run_dir(out, row, setting)
    stamp = build_stamp(setting)
    if (where / "records.jsonl").exists():
        if not (where / "build.json").is_file() or \
                json.loads((where / "build.json").read_text())["kernels"] != stamp["kernels"]:
            raise SystemExit(f"{where} was started on another llama.cpp build ({build_label(where)}; this one: "
                             f"{'+'.join(stamp['kernels'])}): move it away to measure this build")
    else:
        where.mkdir(parents=True, exist_ok=True)
        write_json(where / "build.json", stamp)
    os.environ["DIVCON_DB"] = str(cache_dir() / "bench_throughput" / f"{row.replace('/', '-')}-{setting}.sqlite")
    concurrency = 1 if setting == "seq" else int(setting[1:])
    evaluate("gsm8k", solver=engine_spec(sol, setting), decomposer=engine_spec(dec, setting),
             pcfg=PIPELINE, split="test", limit=n, out=where,
             concurrency=concurrency, stop=stop)


def row_stats(records: list[dict], baseline: dict[str, dict] | None) -> dict:
    busy = busy_seconds(records)
    usage = [u for r in records for u in r["usage"]]
    tokens_in = sum(u["tokens_in"] for u in usage)
    reused = sum(u.get("prompt_tokens_reused", 0) for u in usage)
    tokens_out = sum(u["tokens_out"] for u in usage)
    model_s = [sum(u["seconds"] for u in r["usage"]) for r in records]
    em = [r["metrics"]["em"] for r in records]
    same = None
    if baseline:
        shared = [r for r in records if r["id"] in baseline]
        same = (sum(r["final_output"] == baseline[r["id"]]["final_output"] for r in shared) / len(shared)
                if shared else None)
    overhead = [1 - m / r["wall_seconds"] for r, m in zip(records, model_s) if r["wall_seconds"] > 0]
    return {
        "n": len(records), "busy_seconds": busy, "questions_per_hour": len(records) / busy * 3600 if busy else None,
        "prompt_tok_s": (tokens_in - reused) / busy if busy else None,
        "decode_tok_s": tokens_out / busy if busy else None,
        "prompt_tokens": tokens_in, "prompt_tokens_reused": reused, "tokens_out": tokens_out,
        "em": sum(em) / len(em) if em else None, "em_ci": bootstrap_ci(em) if em else None,
        "identical_to_seq": same, "divcon_overhead": sum(overhead) / len(overhead) if overhead else None,
        "errors": sum(1 for r in records if r.get("error")),
    }


def report(out: Path, settings: list[str], rows: list[str], n: int, reference: Path | None = None) -> str:
    data: dict = {"n_target": n, "rows": {}, "machine": {"cpus": os.cpu_count()}}
    lines = ["# Throughput: sequential in-process vs questions in flight on llama.cpp's server", "",
             f"GSM8K test, first {n} questions, two-stage. Made by `python benchmarks/bench_throughput.py --rows "
             f"{','.join(rows)} --concurrency {','.join(s[1:] for s in settings if s != 'seq')}"
             f"{f' --reference {reference.as_posix()}' if reference else ''}"
             f"{f' --out {out.as_posix()}' if out != DEFAULT_OUT else ''}` "
             "(resumable; with `--report-only` it rewrites this file from the run files). `seq`: in-process "
             "llama-cpp-python, one question at a time (the path before questions in flight). `cN`: llama-server "
             "engine, N slots, N questions in flight. Every setting has its own call log: nothing is served from "
             "another's cache.", ""]
    for row in rows:
        base_recs = {r["id"]: r for r in read_records(run_dir(out, row, "seq"))}
        stats = {s: row_stats(read_records(run_dir(out, row, s)), base_recs if s != "seq" else None)
                 for s in settings}
        for s, st in stats.items():
            st["llama_cpp_kernels"] = build_label(run_dir(out, row, s))
        data["rows"][row] = stats
        seq_qph = stats.get("seq", {}).get("questions_per_hour")
        lines += [f"## {row}", "", "| setting | n | questions/hour | vs seq | prompt tokens/s | output tokens/s | "
                  "prompt tokens reused | EM [95% CI] | outputs identical to seq | divcon share of wall | errors | "
                  "llama.cpp kernels |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for s, st in stats.items():
            if not st["n"]:
                lines.append(f"| {s} | 0 |" + " - |" * 10)
                continue
            qph = st["questions_per_hour"]
            same = st["identical_to_seq"]
            cells = [s, str(st["n"]), f"{qph:.0f}", f"{qph / seq_qph:.2f}x" if seq_qph else "-",
                     f"{st['prompt_tok_s']:.1f}", f"{st['decode_tok_s']:.1f}",
                     "not reported" if s == "seq" else f"{st['prompt_tokens_reused']} of {st['prompt_tokens']}",
                     f"{st['em']:.3f} [{st['em_ci'][0]:.3f}, {st['em_ci'][1]:.3f}]",
                     f"{same:.2f}" if same is not None else "-", f"{st['divcon_overhead']:.2%}", str(st["errors"]),
                     st["llama_cpp_kernels"]]
            lines.append("| " + " | ".join(cells) + " |")
        ref = row_stats(read_records(run_dir(reference, row, "seq")), None) if reference else None
        if ref and ref["n"]:
            best = max((s for s in settings if stats[s]["n"]), key=lambda s: stats[s]["questions_per_hour"] or 0)
            data["rows"][row]["reference_seq"] = {**ref, "dir": reference.as_posix(),
                                                  "llama_cpp_kernels": build_label(run_dir(reference, row, "seq"))}
            lines += ["", f"Against the sequential path of `{reference.as_posix()}` ({ref['n']} questions, "
                      f"{ref['questions_per_hour']:.0f} questions/hour, kernels "
                      f"{data['rows'][row]['reference_seq']['llama_cpp_kernels']}): the best setting here, {best}, "
                      f"is {stats[best]['questions_per_hour'] / ref['questions_per_hour']:.2f}x."]
        lines.append("")
    lines += ["questions/hour counts the time the run was busy (the union of the questions' start-to-finish "
              "intervals), so a pause between an interruption and its resume does not count. Prompt and output "
              "tokens/s are per second of that busy time, all models together; prompt tokens/s counts those the "
              "engine processed (not those it reused; the in-process engine does not report reuse). divcon's share "
              "of wall is 1 - model seconds / question wall seconds, averaged over questions; with questions in "
              "flight a question's wall also holds its wait for a free slot, so it is an upper bound there.", ""]
    text = "\n".join(lines)
    (out / "report.md").write_text(text)
    write_json(out / "report.json", data)
    return text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--concurrency", default="4,8,16", help="in-flight settings to compare with seq")
    ap.add_argument("--rows", default="T/T,SD-R/T")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--stop-after", type=float, default=None, help="minutes; then finish what is in flight and stop")
    ap.add_argument("--reference", type=Path, default=None,
                    help="an earlier output dir (e.g. another build's) whose seq rows the report also compares to")
    ap.add_argument("--report-only", action="store_true")
    args = ap.parse_args()
    settings = ["seq"] + [f"c{int(c)}" for c in args.concurrency.split(",") if c]
    rows = args.rows.split(",")
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.report_only:
        stop = StopWhen.after_minutes(args.stop_after)
        for row in rows:
            for s in settings:
                if stop.out_of_time():
                    break
                run(args.out, row, s, args.n, stop)
                report(args.out, settings, rows, args.n, args.reference)  # current after every setting
                print(f"{row} {s}: {len(read_records(run_dir(args.out, row, s)))}/{args.n}", flush=True)
    print(report(args.out, settings, rows, args.n, args.reference))


if __name__ == "__main__":
    main()
