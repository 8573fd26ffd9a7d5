"""The in-flight runner: N questions at once, each written as it finishes; stop conditions; errors; and a run killed
with several questions in flight resumes to exactly N records."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from divcon.backends import register_backend
from divcon.evaluate import evaluate
from divcon.runner import StopWhen, run_in_flight
from divcon.runs import read_records
from tests.fakes import ScriptedBackend

ROOT = Path(__file__).resolve().parents[1]


class Overlap:
    """Counts how many jobs run at once."""

    def __init__(self, delay: float = 0.05):
        self.delay, self.now, self.peak, self.lock = delay, 0, 0, threading.Lock()

    def __call__(self, job: int) -> dict:
        with self.lock:
            self.now += 1
            self.peak = max(self.peak, self.now)
        time.sleep(self.delay)
        with self.lock:
            self.now -= 1
        return {"id": job}


def test_sequential_keeps_job_order():
    written: list[dict] = []
    out = run_in_flight(range(5), lambda j: {"id": j}, written.append, concurrency=1)
    assert [r["id"] for r in written] == [0, 1, 2, 3, 4] and out.written == 5 and not out.stopped


def test_concurrency_is_reached_and_never_exceeded():
    work, written = Overlap(), []
    run_in_flight(range(12), work, written.append, concurrency=4)
    assert work.peak == 4
    assert sorted(r["id"] for r in written) == list(range(12))


def test_records_are_written_as_each_finishes_not_in_batches():
    """A slow first question does not hold back the others (no barrier)."""
    order: list[int] = []

    def work(j: int) -> dict:
        time.sleep(0.3 if j == 0 else 0.01)
        return {"id": j}

    run_in_flight(range(4), work, lambda r: order.append(r["id"]), concurrency=4)
    assert order[-1] == 0 and sorted(order) == [0, 1, 2, 3]


def test_max_new_and_deadline_stop_starting_jobs():
    written: list[dict] = []
    out = run_in_flight(range(10), lambda j: {"id": j}, written.append, concurrency=2, stop=StopWhen(max_new=3))
    assert len(written) == 3 and out.stopped
    ticks = iter(range(100))
    out = run_in_flight(range(10), lambda j: {"id": j}, written.append, concurrency=1,
                        stop=StopWhen(deadline=2, clock=lambda: next(ticks)))
    assert out.written == 2 and out.stopped


def test_an_error_stops_new_jobs_and_keeps_those_in_flight():
    written: list[dict] = []

    def work(j: int) -> dict:
        if j == 1:
            raise RuntimeError("server gone")
        time.sleep(0.1)
        return {"id": j}

    with pytest.raises(RuntimeError, match="server gone"):
        run_in_flight(range(20), work, written.append, concurrency=3)
    assert sorted(r["id"] for r in written) == [0, 2]  # the two in flight with the failing one were written


def test_eval_with_questions_in_flight_writes_every_record_once(tmp_path):
    register_backend("fake", ScriptedBackend)
    _, s = evaluate("gsm8k", solver="fake:m", limit=9, out=tmp_path / "run", concurrency=4)
    ids = [r["id"] for r in read_records(tmp_path / "run")]
    assert sorted(ids) == sorted(f"gsm8k-test-{i}" for i in range(9)) and s["n"] == 9
    assert s["questions_per_hour"] > 0 and s["busy_seconds"] <= s["wall_seconds"] + 1e-6
    # the same run again, answered from the call cache: no throughput is claimed for it
    _, again = evaluate("gsm8k", solver="fake:m", limit=9, out=tmp_path / "again", concurrency=4)
    assert again["cached_calls"] == 2 * 9 and again["questions_per_hour"] is None  # decompose + solve


SLOW_EVAL = """
import sys, time
from pathlib import Path
from divcon.backends import register_backend
from divcon.evaluate import evaluate
from tests.fakes import ScriptedBackend

class Slow(ScriptedBackend):
    def generate(self, requests):
        time.sleep(0.4)
        return super().generate(requests)

register_backend("slow", Slow)
evaluate("gsm8k", solver="slow:m", limit=12, out=Path(sys.argv[1]), concurrency=4)
"""


def test_kill_with_questions_in_flight_then_resume_gives_exactly_n(tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.Popen([sys.executable, "-c", SLOW_EVAL, str(out)], cwd=ROOT, env=env)
    deadline = time.monotonic() + 30
    while len(read_records(out)) < 5 and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)  # 4 questions in flight, some mid-decompose, some mid-solve
    proc.wait()
    first = len(read_records(out))
    assert 5 <= first < 12
    register_backend("slow", ScriptedBackend)  # same outputs, no delay; cached calls are reused
    _, s = evaluate("gsm8k", solver="slow:m", limit=12, out=out, concurrency=4)
    lines = (out / "records.jsonl").read_text().splitlines()
    assert s["n"] == 12 and len(lines) == 12
    assert len({r["id"] for r in read_records(out)}) == 12
