"""benchmarks/evidence.py, the driver of the long measurements: order, time box, exit statuses and the one-time
deletion of the outputs a step remakes, with a fake command runner (nothing is run)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.benchmark_module import loaded_benchmark

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ev():
    with loaded_benchmark("evidence") as mod:
        yield mod


def page_names(ev) -> list[str]:
    """The commands the driver runs after its steps, by argv[0], as Fake keys them."""
    return [page[0] for page in ev.PAGES]


def ok_pages(ev, times: int) -> dict[str, list[int]]:
    """Exit statuses for ``times`` rounds of the pages, each succeeding."""
    return {name: [0] * times for name in page_names(ev)}


class Fake:
    """Exit statuses per command name (argv[0]), in order; records every call; each call takes 10 minutes."""

    def __init__(self, statuses: dict[str, list[int]]):
        self.statuses, self.calls, self.t = statuses, [], 0.0

    def run(self, argv: list[str], env: dict[str, str]) -> int:
        self.calls.append((argv, env))
        self.t += 600
        return self.statuses[argv[0]].pop(0)

    def clock(self) -> float:
        return self.t


def test_steps_run_in_order_and_stop_at_the_time_box(ev, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    stale = tmp_path / "old"
    (stale / "runs").mkdir(parents=True)
    steps = (ev.Step("a", "first", ("a",)),
             ev.Step("b", "second", ("b",), report=("rep",), env={"DIVCON_DB": "x.sqlite"}, replaces=("old",)),
             ev.Step("c", "third", ("c",)))
    fake = Fake({"a": [0, 0], "b": [3, 0], "rep": [0, 0], "c": [3], **ok_pages(ev, 2)})
    state = tmp_path / "evidence.json"
    assert ev.run_steps(steps, 60, state, fake.run, fake.clock) == 3
    names = [argv[0] for argv, _ in fake.calls]
    assert names == ["a", "b", "rep", *page_names(ev)]  # b stopped at its time box: c not started, pages rewritten
    assert fake.calls[0][0] == ["a", "--stop-after", "60.0"]
    assert fake.calls[1] == (["b", "--stop-after", "50.0"], {"DIVCON_DB": "x.sqlite"})  # the minutes left
    assert fake.calls[2][0] == ["rep"]  # a report takes no time box
    assert not stale.exists()  # the first start of b removed what b remakes
    s = json.loads(state.read_text())
    assert "finished" in s["a"] and s["a"]["minutes"] == 10.0
    assert "started" in s["b"] and "finished" not in s["b"] and s["b"]["minutes"] == 20.0  # the step and its report
    assert "c" not in s

    (stale / "runs").mkdir(parents=True)  # b's own new outputs, on resume: kept
    fake.calls.clear()
    assert ev.run_steps(steps, None, state, fake.run, fake.clock) == 3  # no time box: no --stop-after
    assert [argv for argv, _ in fake.calls][:2] == [["b"], ["rep"]]  # a finished: skipped, its minutes kept
    assert stale.exists()
    s = json.loads(state.read_text())
    assert s["a"]["minutes"] == 10.0
    assert "finished" in s["b"] and s["b"]["minutes"] == 40.0 and "started" in s["c"]


def test_a_finished_step_runs_again_once_its_config_changes(ev, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cfg.yaml").write_text("n: 10\n")
    steps = (ev.Step("a", "first", ("a", "cfg.yaml"), report=("rep",)),)
    fake = Fake({"a": [0, 0], "rep": [0, 0], **ok_pages(ev, 3)})
    state = tmp_path / "s.json"
    assert ev.run_steps(steps, None, state, fake.run, fake.clock) == 0
    assert ev.run_steps(steps, None, state, fake.run, fake.clock) == 0  # unchanged: nothing but the claims
    assert [argv[0] for argv, _ in fake.calls] == ["a", "rep", *page_names(ev), *page_names(ev)]
    (tmp_path / "cfg.yaml").write_text("n: 20\n")  # a larger size: the step resumes its files to it
    assert ev.run_steps(steps, None, state, fake.run, fake.clock) == 0
    assert [argv[0] for argv, _ in fake.calls][6:] == ["a", "rep", *page_names(ev)]


def test_a_failing_step_stops_the_run_with_its_status(ev, tmp_path: Path) -> None:
    steps = (ev.Step("a", "first", ("a",), report=("rep",)), ev.Step("b", "second", ("b",)))
    fake = Fake({"a": [1], "b": [0], **ok_pages(ev, 1)})
    assert ev.run_steps(steps, 60, tmp_path / "s.json", fake.run, fake.clock) == 1
    assert [argv[0] for argv, _ in fake.calls] == ["a", *page_names(ev)]  # no report of a failed step, b not run


def test_a_step_with_a_review_stops_the_driver_once(ev, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    steps = (ev.Step("a", "first", ("a",), review="choose the prompts"), ev.Step("b", "second", ("b",)))
    fake = Fake({"a": [0], "b": [0], **ok_pages(ev, 2)})
    assert ev.run_steps(steps, None, tmp_path / "s.json", fake.run, fake.clock) == 3
    assert "choose the prompts" in capsys.readouterr().out
    assert ev.run_steps(steps, None, tmp_path / "s.json", fake.run, fake.clock) == 0  # reviewed: b runs
    assert [argv[0] for argv, _ in fake.calls] == ["a", *page_names(ev), "b", *page_names(ev)]


def test_too_little_time_starts_nothing(ev, tmp_path: Path) -> None:
    fake = Fake(ok_pages(ev, 1))
    assert ev.run_steps((ev.Step("a", "first", ("a",)),), 1.0, tmp_path / "s.json", fake.run, fake.clock) == 3
    assert [argv[0] for argv, _ in fake.calls] == page_names(ev)
    assert not (tmp_path / "s.json").exists()


def test_the_real_steps_name_files_that_exist(ev) -> None:
    """Every script and config a step runs is in the repository, and no step remakes a path another one writes."""
    for step in ev.STEPS:
        for arg in ev.named_files(step):  # the files a finished step's fingerprint reads
            assert (ROOT / arg).exists(), (step.name, arg)
    replaced = [p for s in ev.STEPS for p in s.replaces]
    assert len(replaced) == len(set(replaced))


def test_a_step_stopped_by_a_signal_keeps_its_minutes(ev, tmp_path: Path) -> None:
    """A kill at a session's end (SIGTERM, which main turns into SystemExit) must not lose the step's minutes."""
    class Killed(Fake):
        def run(self, argv: list[str], env: dict[str, str]) -> int:
            self.t += 1500  # 25 minutes into the step
            raise SystemExit(143)

    fake = Killed({})
    state = tmp_path / "s.json"
    with pytest.raises(SystemExit):
        ev.run_steps((ev.Step("a", "first", ("a",)),), None, state, fake.run, fake.clock)
    entry = json.loads(state.read_text())["a"]
    assert entry["minutes"] == 25.0 and "finished" not in entry
