"""Benchmark (not a test): ``divcon serve`` under concurrent clients vs ``divcon.evaluate.evaluate`` in-process, on
the same GSM8K test questions with the same models and pipeline.

    python benchmarks/bench_serve.py [--n 64] [--clients 16] [--decomposer SPEC] [--solver SPEC]
    python benchmarks/bench_serve.py --report-only

``serve``: the server runs as its own process (``divcon serve --config <out>/runs/serve/serve.yaml`` on a free
loopback port, every knob at its default but a queue that holds every client and a timeout no question reaches);
``--clients`` threads share the official ``openai`` client and take the questions in order, each sending the next
as soon as its last is answered. Every answer (client-side latency, start and finish, the text, usage and divcon's
extras, or the error) is a line of ``<out>/runs/serve/records.jsonl``. ``eval``: an ordinary eval run dir,
``<out>/runs/eval/``, with as many questions in flight as the backends serve at once (the server's default too).
Each side has its own call log in the cache dir, and the serve side's is emptied before it runs, so no answer comes
from a cache. An eval run resumes; a serve run that did not answer every question is run again from the start (its
latencies must come from one load). report.md and report.json are computed from the run files only.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

import numpy as np
import yaml
from openai import DefaultHttpxClient, OpenAI, OpenAIError

from divcon.evaluate import busy_seconds, evaluate
from divcon.experiments.stats import bootstrap_ci
from divcon.paths import cache_dir
from divcon.pipeline import PipelineConfig
from divcon.runs import RecordWriter, read_records, write_json
from divcon.tasks import Example, get_task

TEACHER = "llamacpp:qwen2.5-1.5b"
SERVED = "bench"
SOLVE_STYLE = "working"  # the prompts the committed runs were made with: a speed benchmark keeps its workload
LOAD_TIMEOUT_S = 900  # the server loads every model before it binds
ANSWER_TIMEOUT_S = 7200  # a client waits as long as the server lets it: its queue holds every question


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_settings(args: argparse.Namespace) -> dict:
    return {"n": args.n, "clients": args.clients, "decomposer": args.decomposer, "solver": args.solver}


def serve_config(args: argparse.Namespace) -> dict:
    return {"queue": args.clients, "timeout": ANSWER_TIMEOUT_S,
            "models": {SERVED: {"mode": "two-stage", "decomposer": args.decomposer, "solver": args.solver,
                                "family": "math", "pipeline": {"solve_style": SOLVE_STYLE}}}}


def start_server(run_dir: Path, port: int) -> subprocess.Popen:
    db = cache_dir() / "bench_serve" / "serve.sqlite"
    db.parent.mkdir(parents=True, exist_ok=True)
    for path in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
        path.unlink(missing_ok=True)
    with open(run_dir / "server.log", "w") as log:  # the server writes to its own copy of the descriptor
        proc = subprocess.Popen([sys.executable, "-m", "divcon.cli", "serve", "--port", str(port), "--config",
                                 str(run_dir / "serve.yaml")], env={**os.environ, "DIVCON_DB": str(db)}, stdout=log,
                                stderr=subprocess.STDOUT)
    deadline = time.monotonic() + LOAD_TIMEOUT_S
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"divcon serve exited with {proc.returncode}; see {run_dir / 'server.log'}")
        try:
            with opener.open(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(1)
    proc.kill()
    raise RuntimeError(f"divcon serve did not come up in {LOAD_TIMEOUT_S} s; see {run_dir / 'server.log'}")


def ask(client: OpenAI, ex: Example) -> dict:
    t0 = time.time()
    try:
        reply = client.chat.completions.create(model=SERVED, messages=[{"role": "user", "content": ex.question}])
        answer = {"final_output": reply.choices[0].message.content, "usage": reply.usage.model_dump(),
                  "divcon": reply.model_extra["divcon"]}
    except OpenAIError as e:
        answer = {"error": str(e).splitlines()[0] if str(e) else type(e).__name__}
    t1 = time.time()
    return {"id": ex.id, "golds": ex.golds, **answer, "started_at": t0, "finished_at": t1, "latency": t1 - t0}


def run_serve(out: Path, args: argparse.Namespace, examples: list[Example]) -> None:
    run_dir = out / "runs" / "serve"
    settings = serve_settings(args)
    done = read_records(run_dir)
    if (run_dir / "settings.json").exists() and json.loads((run_dir / "settings.json").read_text()) == settings \
            and len(done) == len(examples) and not any(r.get("error") for r in done):
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "records.jsonl").unlink(missing_ok=True)
    write_json(run_dir / "settings.json", settings)
    (run_dir / "serve.yaml").write_text(yaml.safe_dump(serve_config(args), sort_keys=False))
    port = free_port()
    server = start_server(run_dir, port)
    try:
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0,
                        timeout=ANSWER_TIMEOUT_S, http_client=DefaultHttpxClient(trust_env=False))  # no proxy
        with ThreadPoolExecutor(args.clients) as pool, RecordWriter(run_dir) as writer:
            for future in as_completed([pool.submit(ask, client, ex) for ex in examples]):
                writer.write(future.result())
    finally:
        server.send_signal(signal.SIGTERM)  # graceful: the server finishes what it has, stops its engines
        server.wait(timeout=300)


def run_eval(out: Path, args: argparse.Namespace) -> None:
    os.environ["DIVCON_DB"] = str(cache_dir() / "bench_serve" / "eval.sqlite")
    evaluate("gsm8k", solver=args.solver, decomposer=args.decomposer,
             pcfg=PipelineConfig(mode="two-stage", solve_style=SOLVE_STYLE),
             split="test", limit=args.n, out=out / "runs" / "eval")


def side_stats(records: list[dict], latencies: list[float], em: list[float]) -> dict:
    busy = busy_seconds(records)
    ok = [r for r in records if not r.get("error")]
    return {
        "n": len(records), "errors": len(records) - len(ok),
        "first_errors": sorted({r["error"] for r in records if r.get("error")})[:3],
        "busy_seconds": busy, "questions_per_hour": len(ok) / busy * 3600 if busy else None,
        "latency_p50": float(np.percentile(latencies, 50)) if latencies else None,
        "latency_p95": float(np.percentile(latencies, 95)) if latencies else None,
        "em": sum(em) / len(em) if em else None, "em_ci": bootstrap_ci(em) if em else None,
    }


def report(out: Path, settings: dict) -> str:
    args = argparse.Namespace(**settings)
    task = get_task("gsm8k")
    served = read_records(out / "runs" / "serve")
    evaluated = read_records(out / "runs" / "eval")
    serve_em = [0.0 if r.get("error") else task.evaluate(r["final_output"], r["golds"]).metrics["em"] for r in served]
    stats = {
        "serve": {**side_stats(served, [r["latency"] for r in served], serve_em),
                  "tokens": sum(r["usage"]["total_tokens"] for r in served if not r.get("error"))},
        "eval": {**side_stats(evaluated, [r["wall_seconds"] for r in evaluated],
                              [r["metrics"]["em"] for r in evaluated]),
                 "tokens": sum(u["tokens_in"] + u["tokens_out"] for r in evaluated for u in r["usage"])},
    }
    by_id = {r["id"]: r for r in evaluated}
    shared = [r for r in served if r["id"] in by_id and not r.get("error")]
    same = (sum(r["final_output"] == by_id[r["id"]]["final_output"].strip() for r in shared) / len(shared)
            if shared else None)
    data = {"settings": settings, "machine": {"cpus": os.cpu_count()}, "sides": stats,
            "identical_outputs": same}
    s, e = stats["serve"], stats["eval"]
    ratio = s["questions_per_hour"] / e["questions_per_hour"] if s["questions_per_hour"] and e["questions_per_hour"] \
        else None

    def cells(name: str, st: dict) -> str:
        if not st["n"]:
            return f"| {name} | 0 |" + " - |" * 6
        return (f"| {name} | {st['n']} | {st['errors']} | {st['questions_per_hour']:.0f} | {st['latency_p50']:.1f} | "
                f"{st['latency_p95']:.1f} | {st['em']:.3f} [{st['em_ci'][0]:.3f}, {st['em_ci'][1]:.3f}] | "
                f"{st['tokens']} |")

    lines = ["# divcon serve under load vs evaluate in-process", "",
             f"GSM8K test, first {args.n} questions, two-stage, decomposer `{args.decomposer}`, solver "
             f"`{args.solver}`, {os.cpu_count()} CPUs. Made by `python benchmarks/bench_serve.py --n {args.n} "
             f"--clients {args.clients}` (with `--report-only` it rewrites this file from the run files). serve: "
             f"`divcon serve` in its own process, {args.clients} concurrent clients on loopback using the official "
             "openai client; evaluate: `divcon.evaluate.evaluate` with the questions in flight the backends serve at "
             "once (the server's default concurrency). Each side has its own call log: no answer came from a cache.",
             "", "| path | n | errors | questions/hour | p50 latency (s) | p95 latency (s) | EM [95% CI] | tokens |",
             "|---|---|---|---|---|---|---|---|", cells(f"divcon serve, {args.clients} clients", s),
             cells("evaluate, in-process", e), "",
             f"serve / evaluate questions per hour: {ratio:.2f}x." if ratio else "serve / evaluate: -",
             f"Outputs identical to evaluate's: {same:.2f} of the questions both answered." if same is not None
             else "", ""]
    for name, st in stats.items():
        if st["first_errors"]:
            lines.append(f"{name} errors (first {len(st['first_errors'])}): " + "; ".join(st["first_errors"]))
    lines += ["", "Latency is a question's time from request to answer as its client saw it (serve: waiting in the "
              "server's queue included) or its time in flight in-process (evaluate: no queue, the runner starts a "
              "question only when a slot is free). Questions per hour count answered questions over the time each "
              "side was busy (the union of the questions' start-to-finish intervals).", ""]
    text = "\n".join(lines)
    (out / "report.md").write_text(text)
    write_json(out / "report.json", data)
    return text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--clients", type=int, default=16, help="concurrent clients of the server")
    ap.add_argument("--decomposer", default=TEACHER)
    ap.add_argument("--solver", default=TEACHER)
    ap.add_argument("--out", type=Path, default=Path("reports/bench_serve"))
    ap.add_argument("--report-only", action="store_true")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.report_only:
        run_serve(args.out, args, get_task("gsm8k").examples("test", limit=args.n))
        print(f"serve: {len(read_records(args.out / 'runs' / 'serve'))}/{args.n}", flush=True)
        run_eval(args.out, args)
        print(f"eval: {len(read_records(args.out / 'runs' / 'eval'))}/{args.n}", flush=True)
    recorded = args.out / "runs" / "serve" / "settings.json"
    print(report(args.out, json.loads(recorded.read_text()) if recorded.exists() else serve_settings(args)))


if __name__ == "__main__":
    main()
