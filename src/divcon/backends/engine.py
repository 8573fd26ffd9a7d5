"""llama.cpp's own ``llama-server`` as the engine behind divcon's GGUF models, one process per model.

Why a server rather than llama-cpp-python in-process: it decodes the requests of its parallel slots in one batch
(continuous batching) and keeps each slot's prompt in the KV cache, so a prompt that shares a prefix with an earlier
one (the same few-shot header, the same question) only evaluates the new part.

This module only runs processes: it finds the binary, starts a server on a free loopback port, waits until it is
healthy, and makes sure it dies with divcon. Requests go to ``server.base_url`` with any OpenAI-compatible client.

How a server never outlives divcon:

- normal exit, Ctrl-C (KeyboardInterrupt) and ``sys.exit``: an ``atexit`` hook stops every server (SIGTERM, then
  SIGKILL after a grace period);
- SIGTERM: a handler (installed only if the program has none) stops them too, then exits with status 143;
- SIGKILL, a crash, anything that skips Python's exit: the kernel kills the server (Linux ``PR_SET_PDEATHSIG``).

Servers run in their own session (``start_new_session=True``): a Ctrl-C in the terminal reaches divcon only, which
stops its servers itself, rather than killing a server under a request in flight.

``PR_SET_PDEATHSIG`` fires when the *thread* that forked the server exits, not only the process. divcon runs model
calls in short-lived worker threads, so a server started from one of them would be killed when its job finishes.
Servers are therefore always forked from a thread that lives as long as the process: the main thread when
``start()`` is called there, else one daemon "spawner" thread that does nothing but fork (``_spawn`` below).
"""

from __future__ import annotations

import atexit
import ctypes
import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import Future
from pathlib import Path

from divcon.paths import cache_dir

_local = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never through $http_proxy

READY_TIMEOUT = 120.0  # seconds for a server to load its model and answer /health
STOP_GRACE = 2.0  # seconds between SIGTERM and SIGKILL: an idle server exits in ~30 ms, a busy one never in time
CACHE_RAM_MIB = 256  # per-server cap on llama.cpp's host prompt cache (its default, 8192, can exhaust the machine)


def server_binary() -> Path | None:
    """The llama-server to run: $DIVCON_LLAMA_SERVER, else <venv>/bin/llama-server (scripts/setup.sh builds it),
    else the first on PATH; None when there is none."""
    env = os.environ.get("DIVCON_LLAMA_SERVER")
    if env:
        return Path(env) if Path(env).is_file() else None
    venv = Path(sys.prefix) / "bin" / "llama-server"
    if venv.is_file():
        return venv
    found = shutil.which("llama-server")
    return Path(found) if found else None


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent():
    """A preexec_fn that makes the kernel SIGKILL the child when the thread that forked it dies (Linux only)."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up here: the child should only make the call
    parent = os.getpid()

    def preexec() -> None:
        prctl(1, signal.SIGKILL, 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
        if os.getppid() != parent:  # divcon died between fork and prctl: no signal will ever come
            os._exit(1)

    return preexec


# llama.cpp's OpenMP threads spin while they wait for work by default. Two local servers (a student decomposer beside
# its teacher solver) then burn the cores each other needs: on 2 cores SD-R/T with questions in flight slowed to a
# crawl, and passive waiting restored it. A user's own OMP_WAIT_POLICY is kept.
SERVER_ENV = {"OMP_WAIT_POLICY": "PASSIVE"}


def server_env() -> dict[str, str]:
    return {**SERVER_ENV, **os.environ}


def _popen(argv: list[str], log) -> subprocess.Popen:
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=server_env(),
                            start_new_session=True, preexec_fn=_die_with_parent())  # noqa: PLW1509 (one prctl)


_spawn_jobs: queue.SimpleQueue | None = None
_spawn_lock = threading.Lock()


def _spawner_loop(jobs: queue.SimpleQueue) -> None:
    while True:
        argv, log, result = jobs.get()
        try:
            result.set_result(_popen(argv, log))
        except BaseException as e:  # noqa: BLE001 (raised again in the thread that asked)
            result.set_exception(e)


def _spawn(argv: list[str], log) -> subprocess.Popen:
    """Start ``argv`` from a thread that lives as long as the process (see the module docstring)."""
    global _spawn_jobs
    if threading.current_thread() is threading.main_thread():
        return _popen(argv, log)
    with _spawn_lock:
        if _spawn_jobs is None:
            _spawn_jobs = queue.SimpleQueue()
            threading.Thread(target=_spawner_loop, args=(_spawn_jobs,), name="divcon-engine-spawner",
                             daemon=True).start()
    result: Future = Future()
    _spawn_jobs.put((argv, log, result))
    return result.result()


def _log_reason(path: Path) -> str:
    """What went wrong, from a server log: its first error line (the cause), else its last line."""
    lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    if not lines:
        return "(empty log)"
    errors = [ln for ln in lines if re.match(r"[\d.]+ E ", ln)]
    line = errors[0] if errors else lines[-1]
    return re.sub(r"^[\d.]+ [A-Z] +", "", line)  # without llama.cpp's "0.00.005.267 E " prefix


class LlamaServer:
    """One llama-server process for one model (and LoRA), with ``slots`` parallel sequences of ``ctx`` tokens each.

    The KV cache is not unified: each slot owns ``ctx`` tokens (llama.cpp rounds up to a multiple of 256; the real
    figure is ``slot_ctx`` once started), so a long prompt never takes room from another slot, and a prompt longer
    than ``ctx`` is refused by the server rather than truncated.

    The host-memory prompt cache is capped at ``CACHE_RAM_MIB`` per server: llama.cpp's default (8 GiB each) let a
    teacher server grow to 8 GB over a long run, and with eight servers of a Table 1 grid on a 23 GB machine the
    kernel's OOM killer ended the run. Slot-local prefix reuse, which is what repeated few-shot prompts need, does
    not depend on this cache.
    """

    def __init__(self, model: str | Path, lora: str | Path | None = None, ctx: int = 4096, slots: int = 1,
                 threads: int | None = None):
        self.model = Path(model)
        self.lora = Path(lora) if lora else None
        self.ctx, self.slots = int(ctx), int(slots)
        self.threads = int(threads or os.cpu_count() or 1)
        self.proc: subprocess.Popen | None = None
        self.port: int | None = None
        self.log_path: Path | None = None
        self.slot_ctx: int | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def argv(self, binary: Path, port: int) -> list[str]:
        cmd = [str(binary), "--host", "127.0.0.1", "--port", str(port), "-m", str(self.model),
               "-c", str(self.ctx * self.slots),  # the total: -np splits it evenly among the slots
               "-np", str(self.slots), "--no-kv-unified",
               "--threads", str(self.threads),  # prompt processing (--threads-batch) uses the same number
               "--fit", "off",  # everything is set explicitly; fitting only re-loads the model to size GPU memory
               "--jinja",  # the chat template of the GGUF, rendered like llama-cpp-python and transformers do
               "--no-webui", "--metrics",  # no browser UI; Prometheus counters (cached prompt tokens) on /metrics
               "--log-colors", "off",
               "--cache-ram", str(CACHE_RAM_MIB)]
        if self.lora:
            cmd += ["--lora", str(self.lora)]
        return cmd

    def start(self, timeout: float = READY_TIMEOUT) -> LlamaServer:
        """Start the server and return once /health answers 200; RuntimeError (one line, naming the model and the
        cause from the log) when the process exits first or ``timeout`` seconds pass."""
        binary = server_binary()
        if binary is None:
            where = os.environ.get("DIVCON_LLAMA_SERVER") or "llama-server (none in the venv or on PATH)"
            raise RuntimeError(f"cannot serve {self.model}: {where} not found; run scripts/setup.sh to build it")
        for attempt in range(3):  # another program may take the free port before the server binds it
            port = free_port()
            log_path = cache_dir() / "engines" / f"{self.model.stem}-{port}.log"
            log_path.parent.mkdir(parents=True, exist_ok=True)
            with open(log_path, "wb") as log:
                proc = _spawn(self.argv(binary, port), log)
            self.proc, self.port, self.log_path = proc, port, log_path
            if self not in _started:
                _started.append(self)
            try:
                if self._wait_ready(timeout):
                    return self
            except BaseException:  # Ctrl-C or SIGTERM while the model loads
                self.stop()
                raise
            reason = _log_reason(log_path)
            if proc.poll() is not None and "couldn't bind" in reason and attempt < 2:
                log_path.unlink(missing_ok=True)
                continue
            self.stop()
            status = f"exited with status {proc.returncode}" if proc.returncode is not None else \
                f"was not ready after {timeout:.0f} s"
            raise RuntimeError(f"llama-server for {self.model} {status}: {reason} (log: {log_path})")
        raise AssertionError("unreachable")

    def _wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                with _local.open(f"http://127.0.0.1:{self.port}/health", timeout=2) as r:
                    if r.status == 200 and self.proc.poll() is None:  # and not some other program on the port
                        self.slot_ctx = self._slot_ctx()
                        return True
            except (urllib.error.URLError, OSError):  # not listening yet, or 503 while the model loads
                pass
            time.sleep(0.05)
        return False

    def _slot_ctx(self) -> int | None:
        try:
            with _local.open(f"http://127.0.0.1:{self.port}/props", timeout=5) as r:
                return int(json.load(r)["default_generation_settings"]["n_ctx"])
        except (urllib.error.URLError, OSError, KeyError, ValueError):
            return None

    def stop(self, grace: float = STOP_GRACE) -> None:
        """SIGTERM, then SIGKILL if the server has not exited after ``grace`` seconds. Safe to call twice."""
        _stop([self], grace)

    def __repr__(self) -> str:
        state = f"pid {self.pid} at {self.base_url}" if self.running else "stopped"
        return f"LlamaServer({self.model.name}, slots={self.slots}, ctx={self.ctx}, {state})"


def _stop(servers: list[LlamaServer], grace: float) -> None:
    """Stop servers together, so N busy servers take ``grace`` seconds, not N times that. A busy llama-server does
    not exit on SIGTERM until its requests finish (a minute, for a long generation), hence the SIGKILL."""
    procs = [s.proc for s in servers if s.running]
    for proc in procs:
        proc.terminate()
    deadline = time.monotonic() + grace
    for proc in procs:
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


_started: list[LlamaServer] = []  # every server this process started, for stop_all
_servers: dict[tuple, LlamaServer] = {}  # get_server's shared servers, by their arguments
_servers_lock = threading.Lock()


def get_server(model: str | Path, lora: str | Path | None = None, ctx: int = 4096, slots: int = 1,
               threads: int | None = None) -> LlamaServer:
    """The running server for these arguments, started on first use and shared by every caller in this process.

    Thread-safe. A server that has died (crashed, killed) is started again. All are stopped when divcon exits.
    """
    threads = int(threads or os.cpu_count() or 1)
    key = (str(Path(model).resolve()), str(Path(lora).resolve()) if lora else None, int(ctx), int(slots), threads)
    with _servers_lock:  # held while starting: two threads asking for one model start it once
        server = _servers.get(key)
        if server is None or not server.running:
            _install_sigterm_handler()
            server = _servers[key] = LlamaServer(model, lora, ctx, slots, threads).start()
        return server


@atexit.register
def stop_all() -> None:
    """Stop every server this process started (at exit, on SIGTERM; callable any time)."""
    _stop(_started[:], STOP_GRACE)  # a copy: a thread may be starting one
    _started.clear()
    _servers.clear()


def _forget_after_fork() -> None:
    """A forked child (multiprocessing) owns none of its parent's servers, has no spawner thread, and may have
    inherited a lock held by a thread that does not exist in it."""
    global _spawn_jobs, _spawn_lock, _servers_lock
    _started.clear()
    _servers.clear()
    _spawn_jobs, _spawn_lock, _servers_lock = None, threading.Lock(), threading.Lock()


os.register_at_fork(after_in_child=_forget_after_fork)


def _on_sigterm(signum, frame) -> None:
    stop_all()
    sys.exit(128 + signum)  # 143: what a shell reports for a process killed by SIGTERM


def _install_sigterm_handler() -> None:
    """Stop servers on SIGTERM too, unless the program handles SIGTERM itself (then it is its job to exit, and
    atexit still stops them). Only the main thread may install handlers; elsewhere PR_SET_PDEATHSIG still applies."""
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _on_sigterm)
