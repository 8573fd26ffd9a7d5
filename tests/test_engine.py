"""The llama-server engine: it starts, answers, is shared, fails fast on a bad model, stops, and never outlives divcon
(SIGKILL, Ctrl-C, SIGTERM), with SmolLM2 (loads in well under a second)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from divcon.backends import engine
from divcon.backends.engine import CACHE_RAM_MIB, LlamaServer, get_server, server_binary, stop_all
from tests.conftest import needs_smollm2

pytestmark = [
    pytest.mark.skipif(server_binary() is None,
                       reason="llama-server not built (scripts/setup.sh builds .venv/bin/llama-server; "
                              "or set DIVCON_LLAMA_SERVER)"),
    needs_smollm2,
]


@pytest.fixture(scope="module")
def model() -> Path:
    from divcon.backends.registry import resolve_gguf

    return resolve_gguf("smollm2-135m")


@pytest.fixture(autouse=True)
def engine_cache(tmp_path, monkeypatch):
    """Server logs go to this test's own cache; servers and the SIGTERM handler never leak out of a test."""
    monkeypatch.setenv("DIVCON_CACHE", str(tmp_path / "cache"))
    sigterm = signal.getsignal(signal.SIGTERM)
    yield tmp_path / "cache"
    stop_all()
    signal.signal(signal.SIGTERM, sigterm)


def gone(pid: int) -> bool:
    """No such process, or only a zombie left for its new parent to reap."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in "ZX"
    except (FileNotFoundError, ProcessLookupError):
        return True


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def wait_gone(pid: int, port: int | None = None, timeout: float = 5.0) -> bool:
    """The process is gone and its port closed (a zombie leader's other threads may need a moment more)."""
    deadline = time.monotonic() + timeout
    while not (gone(pid) and (port is None or not port_open(port))):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def health(server: LlamaServer) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/health", timeout=5) as r:
        return r.status


def test_start_answer_stop(model, engine_cache):
    from openai import OpenAI

    server = LlamaServer(model, ctx=512, slots=2, threads=1).start()
    pid, port = server.pid, server.port
    try:
        assert health(server) == 200
        assert server.base_url == f"http://127.0.0.1:{port}/v1"
        assert server.slot_ctx == 512  # -c 1024 -np 2: each slot gets its own 512 tokens
        args = server.proc.args  # the host prompt cache is capped (llama.cpp's 8 GiB default once OOM-killed a run)
        assert args[args.index("--cache-ram") + 1] == str(CACHE_RAM_MIB)
        client = OpenAI(base_url=server.base_url, api_key="none", max_retries=0, timeout=30)
        messages = [{"role": "user", "content": "Name three colours."}]
        first = client.chat.completions.create(model="m", messages=messages, max_tokens=8, temperature=0)
        assert first.choices[0].message.content
        assert first.usage.prompt_tokens > 5 and 0 < first.usage.completion_tokens <= 8
        assert first.usage.prompt_tokens_details.cached_tokens == 0
        again = client.chat.completions.create(model="m", messages=messages, max_tokens=8, temperature=0)
        # the same prompt again is served from the slot's KV cache: usage and llama.cpp's timings say so
        assert again.usage.prompt_tokens_details.cached_tokens > 0
        assert again.model_extra["timings"]["cache_n"] == again.usage.prompt_tokens_details.cached_tokens
    finally:
        server.stop()
    assert server.proc.returncode is not None and wait_gone(pid, port)
    assert server.log_path == engine_cache / "engines" / f"{model.stem}-{port}.log"
    assert "model loaded" in server.log_path.read_text()


def test_stop_is_quick_even_while_generating(model):
    """A busy llama-server ignores SIGTERM until its requests finish; stop() must not wait for that."""
    server = LlamaServer(model, ctx=4096, slots=1, threads=1).start()
    body = json.dumps({"messages": [{"role": "user", "content": "Count to ten thousand."}], "max_tokens": 4000,
                       "ignore_eos": True}).encode()
    request = urllib.request.Request(server.base_url + "/chat/completions", body, {"Content-Type": "application/json"})

    def generate() -> None:
        try:
            urllib.request.urlopen(request, timeout=60).read()
        except OSError:  # the server is stopped under it
            pass

    client = threading.Thread(target=generate)
    client.start()
    time.sleep(0.5)
    t0 = time.monotonic()
    server.stop()
    assert time.monotonic() - t0 < engine.STOP_GRACE + 1.5 and wait_gone(server.pid, server.port)
    client.join(10)


def test_get_server_shares_one_server_per_arguments(model):
    a = get_server(model, None, 256, 1, 1)
    assert get_server(str(model), None, 256, 1, 1) is a and a.running
    b = get_server(model, None, 256, 2, 1)
    assert b is not a and b.port != a.port and b.running
    stop_all()
    assert wait_gone(a.pid, a.port) and wait_gone(b.pid, b.port)


def test_server_started_in_a_worker_thread_outlives_the_thread(model):
    """PR_SET_PDEATHSIG follows the forking thread: a server started from a job thread must survive the job."""
    started = []
    worker = threading.Thread(target=lambda: started.append(get_server(model, None, 256, 1, 1)))
    worker.start()
    worker.join()
    time.sleep(0.5)
    assert started[0].running and health(started[0]) == 200


def test_bad_model_fails_fast_with_one_line_naming_it(tmp_path):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"this is not a GGUF file")
    t0 = time.monotonic()
    with pytest.raises(RuntimeError) as e:
        get_server(bad, None, 256, 1, 1)
    msg = str(e.value)
    assert time.monotonic() - t0 < 10
    assert str(bad) in msg and "\n" not in msg and "log:" in msg
    assert not engine._servers


def test_missing_binary_is_a_clear_error(monkeypatch, model):
    monkeypatch.setenv("DIVCON_LLAMA_SERVER", "/nonexistent/llama-server")
    assert server_binary() is None
    with pytest.raises(RuntimeError, match="scripts/setup.sh"):
        LlamaServer(model).start()


CHILD = """
import sys, threading, time
from divcon.backends.engine import get_server
start = lambda: get_server(sys.argv[1], None, 256, 1, 1)
if sys.argv[2] == "thread":
    box = []
    t = threading.Thread(target=lambda: box.append(start()))
    t.start(); t.join()
    server = box[0]
else:
    server = start()
print(server.pid, server.port, flush=True)
time.sleep(60)
"""


def start_child(model: Path, engine_cache: Path, where: str = "main") -> tuple[subprocess.Popen, int, int]:
    """A divcon-like process that started a server and now waits; its own session, as if run from a terminal."""
    env = {**os.environ, "DIVCON_CACHE": str(engine_cache)}
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(model), where], stdout=subprocess.PIPE, text=True,
                             env=env, start_new_session=True)
    line = child.stdout.readline().split()
    assert line, f"the child did not start a server (exit status {child.poll()})"
    pid, port = map(int, line)
    assert not gone(pid) and port_open(port)
    return child, pid, port


def log_of(engine_cache: Path, model: Path, port: int) -> str:
    return (engine_cache / "engines" / f"{model.stem}-{port}.log").read_text()


@pytest.mark.parametrize("where", ["main", "thread"])
def test_no_orphan_when_divcon_is_killed(model, engine_cache, where):
    child, pid, port = start_child(model, engine_cache, where)
    child.kill()  # SIGKILL: no atexit, no handler; only the kernel can stop the server now
    child.wait(10)
    assert wait_gone(pid, port), f"llama-server {pid} outlived its SIGKILLed parent"
    assert "cleaning up before exit" not in log_of(engine_cache, model, port)  # SIGKILLed by the kernel


def test_ctrl_c_stops_the_server(model, engine_cache):
    child, pid, port = start_child(model, engine_cache)
    os.killpg(child.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole foreground group
    child.wait(10)
    assert wait_gone(pid, port)
    assert "cleaning up before exit" in log_of(engine_cache, model, port)  # stopped by divcon (SIGTERM), not killed


def test_sigterm_stops_the_server_and_exits_143(model, engine_cache):
    child, pid, port = start_child(model, engine_cache)
    child.terminate()
    assert child.wait(10) == 143
    assert wait_gone(pid, port)
    assert "cleaning up before exit" in log_of(engine_cache, model, port)


def test_servers_wait_passively_unless_the_user_says_otherwise(tmp_path, monkeypatch):
    """Spinning OpenMP threads of one server starve another (student beside teacher on 2 cores)."""
    def policy() -> str:
        out = tmp_path / "env.log"
        with open(out, "wb") as log:
            engine._popen(["sh", "-c", "echo $OMP_WAIT_POLICY"], log).wait(10)
        return out.read_text().strip()

    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    assert policy() == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    assert policy() == "ACTIVE"
