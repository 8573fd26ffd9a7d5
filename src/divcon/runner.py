"""The one resumable loop behind ``divcon eval`` and ``divcon distill generate``: jobs -> skip those done -> run each
with up to N in flight -> write its record the moment it finishes.

Why questions in flight rather than batches: a batch is decomposed whole before any of it is solved, and its slowest
question holds back the rest; with each question flowing decompose -> solve on its own, a batching engine always
has N sequences to decode and records land as soon as each question is done (a kill loses only what was in flight).

Records are written by the calling thread only, one line at a time (see :mod:`divcon.runs`), so resume, the run
dir lock and de-duplication keep their guarantees whatever the concurrency.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterable, TypedDict, TypeVar

J = TypeVar("J")


class Scoring(TypedDict, total=False):
    """What every record of a run dir holds, whichever loop wrote it (an evaluation record, a teacher trace), so
    reports, resume and the error counts read them alike. ``error`` is present only on a question that could not be
    run (scored 0 on every metric)."""

    id: str
    golds: list[str]
    answer: str | None
    answer_source: str  # "marker" | "fallback" | "none" | "error"
    metrics: dict[str, float]
    usage: list[dict]  # divcon.pipeline.StageUsage as dicts, one per stage
    truncated: bool
    error: str


class Stamped(Scoring, total=False):
    """A record as written by :func:`run_in_flight`: stamped with when its work ran."""

    started_at: float  # epoch seconds
    finished_at: float
    wall_seconds: float


@dataclass(frozen=True)
class StopWhen:
    """When to stop starting new jobs; jobs already in flight always finish and are written.

    ``deadline`` is a ``clock()`` instant (a time box; the clock is ``time.monotonic`` unless a test gives its own);
    ``max_new`` bounds the records written by this call.
    """

    deadline: float | None = None
    max_new: int | None = None
    clock: Callable[[], float] = time.monotonic

    @classmethod
    def after_minutes(cls, minutes: float | None, max_new: int | None = None) -> "StopWhen":
        return cls(time.monotonic() + minutes * 60 if minutes is not None else None, max_new)

    def out_of_time(self) -> bool:
        return self.deadline is not None and self.clock() >= self.deadline

    def allows(self, started: int) -> bool:
        """Whether one more job may start, ``started`` jobs having been started by this call."""
        return not self.out_of_time() and (self.max_new is None or started < self.max_new)


@dataclass
class RunOutcome:
    written: int
    stopped: bool  # jobs were left undone because of the stop condition


def run_in_flight(jobs: Iterable[J], work: Callable[[J], Scoring], write: Callable[[Stamped], None],
                  concurrency: int = 1, stop: StopWhen | None = None) -> RunOutcome:
    """Run ``work(job)`` for every job with up to ``concurrency`` at once, in job order of starting, and ``write``
    each result in this thread as it completes, stamped with ``started_at`` and ``finished_at`` (epoch seconds) and
    ``wall_seconds``, from which a summary computes the time the run was busy.

    When a job raises, no new job starts; those in flight finish and are written; then the first error is raised.
    Worker threads are daemons: an interrupt (Ctrl-C) ends the process at once, keeping every record written.
    """
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, not {concurrency}")
    stop = stop or StopWhen()
    done: queue.Queue[tuple[Stamped | None, BaseException | None]] = queue.Queue()
    pending = iter(jobs)
    in_flight = started = written = 0
    error: BaseException | None = None
    exhausted = stopped = False

    def launch(job: J) -> None:
        def target() -> None:
            try:
                t0 = time.time()
                record = work(job)
                t1 = time.time()
                done.put((Stamped(**record, wall_seconds=t1 - t0, started_at=t0, finished_at=t1), None))
            except BaseException as e:  # handed to the caller's thread, which decides
                done.put((None, e))

        threading.Thread(target=target, name="divcon-job", daemon=True).start()

    while True:
        while error is None and not exhausted and in_flight < concurrency:
            if not stop.allows(started):
                stopped = True
                break
            job = next(pending, None)
            if job is None:
                exhausted = True
                break
            launch(job)
            in_flight += 1
            started += 1
        if in_flight == 0:
            break
        record, exc = done.get()
        in_flight -= 1
        if exc is not None:
            error = error or exc
            continue
        write(record)
        written += 1
    if error is not None:
        raise error
    return RunOutcome(written, stopped and not exhausted and next(pending, None) is not None)
