"""Benchmark (not a test): llama.cpp CPU build flags, measured on this machine through llama-server, the engine
divcon serves the embedded models with.

    python benchmarks/bench_cpu_builds.py [--builds avx2,avx512,native] [--report-only]

Each build is llama-server compiled from the llama.cpp source vendored in the pinned llama-cpp-python sdist (the
same source scripts/setup.sh builds), with one set of CPU flags, into ``<cache>/builds/<name>/`` (kept, so a re-run
only measures). For each build, on the teacher model (Qwen2.5-Coder-1.5B Q4_K_M, 2 threads, 8 slots):

* prompt processing, tokens/s: one 512-token prompt alone, and 8 different ones at once;
* decoding, tokens/s: 128 tokens for one request alone, and for 8 at once (greedy, end of text ignored);
* whether it runs at all (a build that crashes on a multi-token prompt is reported as such), and whether its
  greedy output equals the first build's.

Results go to ``reports/bench_cpu_builds/`` (report.md + report.json, ``--report-only`` rewrites them from the
measurement files). Run it on an otherwise idle machine: the numbers are compute-bound.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from divcon.backends.engine import free_port
from divcon.backends.registry import resolve_gguf
from divcon.paths import cache_dir
from divcon.runs import write_json

PORTABLE = "-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON"
BUILDS = {
    "avx2": PORTABLE,
    "avx512": PORTABLE + " -DGGML_AVX512=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX512_BF16=ON -DGGML_AVX512_VBMI=ON",
    "native": "-DGGML_NATIVE=ON",  # -march=native: every extension of this CPU (AMX kernels on a Xeon that has them)
}
LLAMA_CPP_PYTHON = "0.3.36"
MODEL = "qwen2.5-1.5b"
PROMPT_TOKENS, DECODE_TOKENS, PARALLEL = 512, 128, 8


def build(name: str, flags: str, root: Path) -> Path:
    """llama-server built with ``flags`` under ``root/name`` (reused when it is there)."""
    binary = root / name / "llama-server"
    if binary.exists():
        return binary
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=f"divcon-build-{name}-") as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", f"llama-cpp-python=={LLAMA_CPP_PYTHON}",
                        "--no-deps", "--no-binary", ":all:", "-d", tmp], check=True)
        sdist = next(Path(tmp).glob("llama_cpp_python-*.tar.gz"))
        with tarfile.open(sdist) as t:
            t.extractall(tmp, filter="data")
        src = next(Path(tmp).glob("llama_cpp_python-*/vendor/llama.cpp"))
        out = Path(tmp) / "out"
        subprocess.run(["cmake", "-S", str(src), "-B", str(out), "-DCMAKE_BUILD_TYPE=Release", *flags.split(),
                        "-DBUILD_SHARED_LIBS=OFF", "-DLLAMA_OPENSSL=OFF", "-DLLAMA_BUILD_TESTS=OFF",
                        "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_SERVER=ON"], check=True, capture_output=True)
        subprocess.run(["cmake", "--build", str(out), "--target", "llama-server", "-j", str(os.cpu_count() or 2)],
                       check=True, capture_output=True)
        binary.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(out / "bin" / "llama-server", binary)
    (root / name / "build.json").write_text(json.dumps({"flags": flags, "seconds": time.monotonic() - started}))
    return binary


def post(port: int, body: dict) -> dict:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/completion", json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=1800) as r:
        return json.loads(r.read())


def prompt_of(i: int) -> str:
    """About PROMPT_TOKENS tokens of text, different for each i (so no request reuses another's cache)."""
    words = " ".join(f"item{i}-{k} costs {k * 7 + i} dollars," for k in range(PROMPT_TOKENS // 9))
    return f"Request {i}. {words} What is the total?"


def measure(binary: Path, model: Path, log: Path) -> dict:
    port = free_port()
    cmd = [str(binary), "--host", "127.0.0.1", "--port", str(port), "-m", str(model), "-c", str(4096 * PARALLEL),
           "-np", str(PARALLEL), "--no-kv-unified", "--threads", "2", "--fit", "off", "--no-webui",
           "--log-colors", "off"]
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT)
    try:
        for _ in range(600):
            if proc.poll() is not None:
                return {"ok": False, "error": f"server exited with {proc.returncode} while loading"}
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except OSError:
                time.sleep(0.5)

        def run(prompts: list[str], n_predict: int) -> tuple[float, list[dict]]:
            t0 = time.monotonic()
            body = {"n_predict": n_predict, "temperature": 0, "ignore_eos": True, "cache_prompt": False}
            with ThreadPoolExecutor(len(prompts)) as ex:
                res = list(ex.map(lambda p: post(port, {**body, "prompt": p}), prompts))
            return time.monotonic() - t0, res

        out: dict = {"ok": True}
        try:
            post(port, {"prompt": "Hello, how are you today?", "n_predict": 4, "temperature": 0})  # warm-up
            wall, res = run([prompt_of(0)], 1)
            out["prompt_tokens_per_s_1"] = res[0]["timings"]["prompt_per_second"]
            wall, res = run([prompt_of(i) for i in range(1, PARALLEL + 1)], 1)
            out[f"prompt_tokens_per_s_{PARALLEL}"] = sum(r["timings"]["prompt_n"] for r in res) / wall
            wall, res = run(["Count from one to one thousand: one, two,"], DECODE_TOKENS)
            out["decode_tokens_per_s_1"] = res[0]["timings"]["predicted_per_second"]
            out["sample_output"] = res[0]["content"]
            wall, res = run([f"Count from {i} to one thousand: {i}," for i in range(PARALLEL)], DECODE_TOKENS)
            # the parallel run also processes 8 short prompts; they are a few tokens each, well under 1% of the time
            out[f"decode_tokens_per_s_{PARALLEL}"] = sum(r["timings"]["predicted_n"] for r in res) / wall
        except OSError as e:
            return {"ok": False, "error": f"server died or refused ({e}); exit code {proc.poll()}"}
        return out
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def cpu_model() -> str:
    try:
        line = next(x for x in Path("/proc/cpuinfo").read_text().splitlines() if x.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()
    return line.split(":", 1)[1].strip()


def cpu_flags() -> list[str]:
    try:
        line = next(x for x in Path("/proc/cpuinfo").read_text().splitlines() if x.startswith("flags"))
    except (OSError, StopIteration):
        return []
    return sorted(f for f in line.split(":", 1)[1].split() if f.startswith(("avx", "amx")))


def write_report(out: Path, results: dict) -> str:
    first = next((r for r in results.values() if r.get("ok")), None)
    lines = ["# llama.cpp CPU builds, measured through llama-server", "",
             "Made by `python benchmarks/bench_cpu_builds.py` (`--report-only` rewrites this file from "
             "report.json).", "",
             f"Machine: {results['_machine']['cpu']}, {results['_machine']['cores']} cores; CPU extensions: "
             f"{', '.join(results['_machine']['flags']) or 'unknown'}. Model: {MODEL} (Q4_K_M), 2 threads, "
             f"{PARALLEL} slots. Prompt: about {PROMPT_TOKENS} tokens; decode: {DECODE_TOKENS} tokens per request.", "",
             f"| build | flags | prompt tok/s (1) | prompt tok/s ({PARALLEL} at once) | decode tok/s (1) | "
             f"decode tok/s ({PARALLEL} at once) | output = first build's |", "|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        if name.startswith("_"):
            continue
        if not r.get("ok"):
            lines.append(f"| {name} | `{BUILDS.get(name, '?')}` | failed: {r.get('error')} | | | | |")
            continue
        same = "yes" if first and r["sample_output"] == first["sample_output"] else "no"
        lines.append(f"| {name} | `{BUILDS.get(name, '?')}` | {r['prompt_tokens_per_s_1']:.1f} | "
                     f"{r[f'prompt_tokens_per_s_{PARALLEL}']:.1f} | {r['decode_tokens_per_s_1']:.1f} | "
                     f"{r[f'decode_tokens_per_s_{PARALLEL}']:.1f} | {same} |")
    lines += ["", "scripts/setup.sh builds the AVX-512 set where the CPU has AVX-512 (F, CD, VL, DQ, BW; VNNI, BF16 "
              "and VBMI each where present) and the AVX2 set elsewhere. Not the native build: on a Xeon with AMX "
              "its AMX kernels segfaulted on any prompt of more than one token in an earlier session; on a CPU "
              "without AMX (this one, if the list above has no amx) native is the AVX-512 set plus this CPU's "
              "other extensions."]
    text = "\n".join(lines) + "\n"
    (out / "report.md").write_text(text, encoding="utf-8")
    return text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--builds", default=",".join(BUILDS))
    ap.add_argument("--out", type=Path, default=Path("reports/bench_cpu_builds"))
    ap.add_argument("--report-only", action="store_true")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.report_only:
        print(write_report(args.out, json.loads((args.out / "report.json").read_text())))
        return
    names = args.builds.split(",")
    unknown = set(names) - set(BUILDS)
    if unknown:
        ap.error(f"unknown builds {sorted(unknown)}; builds: {', '.join(BUILDS)}")
    root = cache_dir() / "builds"
    model = resolve_gguf(MODEL)
    results: dict = {"_machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "flags": cpu_flags()}}
    for name in names:
        print(f"{name}: building (once)", flush=True)
        binary = build(name, BUILDS[name], root)
        print(f"{name}: measuring", flush=True)
        results[name] = measure(binary, model, root / name / "server.log")
        print(f"{name}: {results[name]}", flush=True)
    write_json(args.out / "report.json", results)
    print(write_report(args.out, results))


if __name__ == "__main__":
    main()
