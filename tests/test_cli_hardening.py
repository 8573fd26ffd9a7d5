"""The ``divcon`` CLI at its edges, in-process through typer's CliRunner on scripted backends: bad numbers and specs
are refused before anything runs or is written, secrets never reach a file, a model that cannot load leaves no run
dir behind, results go to stdout and everything else to stderr, a server outage stops the run with one line and
keeps the records made so far, and a run dir held by another writer is refused naming its pid."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import divcon.evaluate as evaluate_module
from divcon.backends import register_backend
from divcon.cli import app
from tests.fake_openai_server import FakeOpenAIServer
from tests.fakes import ScriptedBackend

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def fake_backends():
    register_backend("fake", ScriptedBackend)


pytestmark = pytest.mark.usefixtures("hermetic_openai_env")


def divcon(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


def lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def total_calls() -> int:
    return sum(ScriptedBackend.calls.values())


def raw_record_ids(run_dir: Path) -> list[str]:
    """Ids as written, line by line: ``read_records`` drops duplicates, so it could not see them."""
    return [json.loads(line)["id"] for line in (run_dir / "records.jsonl").read_text().splitlines() if line.strip()]


FAKE_EVAL = ("eval", "--task", "gsm8k", "--solver", "fake:m", "--decomposer", "fake:m")


# 1. numeric options ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("option, value", [
    ("--limit", "-1"), ("--offset", "-3"), ("--concurrency", "-1"), ("--concurrency", "0"), ("--solve-tokens", "0"),
    ("--decompose-tokens", "0"), ("--max-subquestions", "0"),
])
def test_eval_refuses_out_of_range_numbers_before_running(tmp_path, option, value):
    before = total_calls()
    r = divcon(*FAKE_EVAL, option, value, "--out", tmp_path / "run")
    assert r.exit_code == 2
    assert r.stdout == ""
    # one line naming the option and the reason, not click's usage text and box
    err = lines(r.stderr)
    assert len(err) == 1 and err[0].startswith("error: Invalid value") and option in err[0], r.stderr
    assert "Traceback" not in r.output
    assert not (tmp_path / "run").exists()
    assert total_calls() == before


@pytest.mark.parametrize("option", ["--samples", "--limit"])
def test_distill_generate_refuses_zero(tmp_path, option):
    before = total_calls()
    r = divcon("distill", "generate", "--task", "gsm8k", "--teacher", "fake:m", option, "0",
               "--out", tmp_path / "traces")
    assert r.exit_code == 2
    assert r.stdout == ""
    err = lines(r.stderr)
    assert len(err) == 1 and err[0].startswith("error: Invalid value") and option in err[0], r.stderr
    assert "Traceback" not in r.output
    assert not (tmp_path / "traces").exists()
    assert total_calls() == before


# 2. spec options and secrets ---------------------------------------------------------------------------------------

def test_unknown_spec_option_is_refused(tmp_path):
    r = divcon("eval", "--task", "gsm8k", "--limit", "1", "--mode", "cot", "--solver", "fake:m,ctxx=8192",
               "--out", tmp_path / "run")
    assert r.exit_code == 2
    assert r.stdout == ""
    assert "unknown option" in r.stderr and "'ctxx'" in r.stderr
    assert "Traceback" not in r.output
    assert not (tmp_path / "run").exists()


def test_unknown_llamacpp_option_lists_the_known_ones(tmp_path):
    """Refused from the spec alone: no GGUF is opened, so this holds whether or not the model is installed."""
    r = divcon("eval", "--task", "gsm8k", "--limit", "1", "--mode", "cot", "--solver", "llamacpp:smollm2-135m,ctxx=1",
               "--out", tmp_path / "run")
    assert r.exit_code == 2
    err = r.stderr
    assert "unknown option" in err and "'ctxx'" in err
    for known in ("ctx", "lora", "threads"):
        assert known in err.split("'ctxx'", 1)[1], err
    assert "Traceback" not in r.output
    assert not (tmp_path / "run").exists()


def test_secret_in_spec_is_refused_and_written_nowhere(tmp_path, isolated_call_log):
    secret = "sk-secret123"
    r = divcon("eval", "--task", "gsm8k", "--limit", "1", "--mode", "cot",
               "--solver", f"openai:gpt-4o-mini,api_key={secret},base_url=http://127.0.0.1:9/v1",
               "--out", tmp_path / "run")
    assert r.exit_code == 2
    # refused as a secret, not merely as an unknown option (the spec itself contains "secret")
    assert "secrets" in r.stderr and "'api_key'" in r.stderr and "unknown option" not in r.stderr
    assert "Traceback" not in r.output
    assert secret not in r.output  # not even in the error message: it would end up in CI logs
    assert not (tmp_path / "run").exists()
    assert isolated_call_log.parent == tmp_path  # the call log (and its -wal/-shm) is among the files walked
    for root, _, files in os.walk(tmp_path):
        for name in files:
            assert secret.encode() not in (Path(root) / name).read_bytes(), Path(root) / name


# 3. --context files ------------------------------------------------------------------------------------------------

def test_context_that_is_a_folder_is_one_line(tmp_path):
    before = total_calls()
    r = divcon("solve", "Q?", "--context", tmp_path, "--solver", "fake:m", "--decomposer", "fake:m")
    assert r.exit_code == 2
    assert r.stdout == ""
    assert len(lines(r.stderr)) == 1 and "not a file" in r.stderr
    assert "Traceback" not in r.output
    assert total_calls() == before


def test_context_that_is_not_utf8_is_one_line(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"\xff\xfe bad")
    before = total_calls()
    r = divcon("solve", "Q?", "--context", bad, "--solver", "fake:m", "--decomposer", "fake:m")
    assert r.exit_code == 2
    assert r.stdout == ""
    assert len(lines(r.stderr)) == 1 and "not UTF-8" in r.stderr and str(bad) in r.stderr
    assert "Traceback" not in r.output
    assert total_calls() == before


# 4. a model that cannot load ---------------------------------------------------------------------------------------

def test_backend_that_fails_to_load_leaves_no_run_dir(tmp_path):
    out = tmp_path / "run"
    r = divcon("eval", "--task", "gsm8k", "--limit", "2", "--mode", "cot", "--solver", "llamacpp:/nonexistent/x.gguf",
               "--out", out)
    assert r.exit_code == 2
    assert "/nonexistent/x.gguf" in r.stderr
    assert "Traceback" not in r.output
    assert not out.exists()
    # nothing was left behind that would refuse the corrected command
    r = divcon("eval", "--task", "gsm8k", "--limit", "2", "--mode", "cot", "--solver", "fake:m", "--out", out)
    assert r.exit_code == 0, r.output
    assert raw_record_ids(out) == ["gsm8k-test-0", "gsm8k-test-1"]


# 5. stdout for results, stderr for the rest ------------------------------------------------------------------------

def test_summary_is_key_value_lines_on_stdout_and_the_rest_on_stderr(tmp_path, monkeypatch):
    monkeypatch.setattr(evaluate_module, "_WARNED_UNPRICED", set())  # warned once per process: not by an earlier test
    r = divcon("eval", "--task", "gsm8k", "--limit", "3", "--mode", "cot", "--solver", "fake:m",
               "--out", tmp_path / "run")
    assert r.exit_code == 0, r.output
    out = r.stdout.splitlines()
    assert any(line.startswith("n: 3") for line in out), r.stdout
    assert any(line.startswith("metric: em") for line in out), r.stdout
    assert "total $: unpriced" in out
    assert "big-model $: unpriced" in out
    assert f"run dir: {tmp_path / 'run'}" in out
    assert "…" not in r.stdout  # never a table squeezed into '0.…' off a terminal
    assert "has no price" in r.stderr and "has no price" not in r.stdout
    assert "3/3" not in r.output  # off a terminal the progress bar is off: no last frame in the way
    assert "warning:" not in r.stdout


def test_error_goes_to_stderr_and_stdout_stays_empty(tmp_path):
    r = divcon("eval", "--task", "nosuchtask", "--limit", "1", "--mode", "cot", "--solver", "fake:m",
               "--out", tmp_path / "run")
    assert r.exit_code == 2
    assert r.stdout == ""
    assert "unknown task 'nosuchtask'" in r.stderr
    assert len(lines(r.stderr)) == 1
    assert "Traceback" not in r.output
    assert not (tmp_path / "run").exists()


# 6. an OpenAI-compatible server that goes down mid-run -------------------------------------------------------------

class DiesAfter(FakeOpenAIServer):
    """Answers ``serve`` chat requests, then goes down: its listener is closed while the last answer is still being
    sent, so the next request is refused (a crashed server) rather than racing a shutdown."""

    def __init__(self, serve: int):
        super().__init__()
        self.serve: int | None = serve

    def _next(self, body: dict):
        reply = super()._next(body)
        if self.serve is not None and len(self.requests) >= self.serve:
            self.serve = None
            self.stop()  # from this handler's thread: serve_forever runs in another; this reply still goes out
        return reply


def test_server_outage_stops_the_run_with_one_line_and_keeps_records(tmp_path):
    srv = DiesAfter(serve=2).start()
    try:
        out = tmp_path / "run"
        cmd = ("eval", "--task", "gsm8k", "--limit", "4", "--mode", "cot", "--concurrency", "1",
               "--solver", f"openai:fake,base_url={srv.base_url},outage=1", "--out", out)
        r = divcon(*cmd)
        assert r.exit_code == 2, r.output
        assert r.stdout == ""
        err = lines(r.stderr)
        assert len(err) == 1, r.stderr  # the error line, nothing else
        errors = [line for line in err if line.startswith("error:")]
        assert len(errors) == 1 and srv.base_url in errors[0], r.stderr
        assert "Traceback" not in r.output
        assert raw_record_ids(out) == ["gsm8k-test-0", "gsm8k-test-1"]
        assert len(srv.requests) == 2

        srv.start()  # back on the same port
        r = divcon(*cmd)
        assert r.exit_code == 0, r.output
        ids = raw_record_ids(out)
        assert sorted(ids) == [f"gsm8k-test-{i}" for i in range(4)] and len(set(ids)) == len(ids) == 4
        assert len(srv.requests) == 4  # the resumed run asked only for the 2 missing examples
    finally:
        srv.stop()


# 7. two writers on one run dir -------------------------------------------------------------------------------------

HOLD_LOCK = ("import sys, time, pathlib\n"
             "from divcon.runs import RunLock\n"
             "lock = RunLock(pathlib.Path(sys.argv[1]))\n"
             "print('locked', flush=True)\n"
             "time.sleep(30)\n")


def test_run_dir_held_by_another_writer_is_refused_naming_its_pid(tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))}
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(out)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env)
    try:
        first = holder.stdout.readline()
        assert first.strip() == "locked", holder.stderr.read() if holder.poll() is not None else first
        before = total_calls()
        r = divcon("eval", "--task", "gsm8k", "--limit", "2", "--mode", "cot", "--solver", "fake:m", "--out", out)
        assert r.exit_code == 2, r.output
        assert f"in use by pid {holder.pid}" in r.stderr
        assert r.stdout == ""
        assert "Traceback" not in r.output
        assert not (out / "records.jsonl").exists() and not (out / "config.json").exists()
        assert total_calls() == before
    finally:
        holder.kill()
        holder.wait(timeout=10)
        holder.stdout.close()
        holder.stderr.close()
    # the holder is gone: its flock went with it, no stale lock refuses the same command
    r = divcon("eval", "--task", "gsm8k", "--limit", "2", "--mode", "cot", "--solver", "fake:m", "--out", out)
    assert r.exit_code == 0, r.output
    assert raw_record_ids(out) == ["gsm8k-test-0", "gsm8k-test-1"]
