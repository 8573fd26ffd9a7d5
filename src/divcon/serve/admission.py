"""How many requests the server takes on: ``workers`` pipelines run at once in a thread pool and ``queue`` more
wait for a free one; a request beyond that is refused at once (the app answers 429 with Retry-After) instead of
piling up where every waiting client would eventually time out.

A request counts from admission until its pipeline finishes, not until its client is answered: a request answered
504 keeps its place while its pipeline runs on in the background, so timeouts can never let more work in than the
bound. One still waiting when it times out is cancelled and frees its place at once.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, TypeVar

T = TypeVar("T")


class Busy(Exception):
    """Every worker is busy and the queue is full."""


class Admission:
    def __init__(self, workers: int, queue: int):
        self.capacity = workers + queue
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="divcon-serve")
        self._places = threading.BoundedSemaphore(self.capacity)
        self._lock = threading.Lock()
        self.admitted = 0  # running or waiting

    def submit(self, fn: Callable[[], T]) -> Future[T]:
        if not self._places.acquire(blocking=False):
            raise Busy
        with self._lock:
            self.admitted += 1
        try:
            future = self._pool.submit(fn)
        except BaseException:
            self._leave(None)
            raise
        future.add_done_callback(self._leave)
        return future

    def _leave(self, _: Future | None) -> None:
        with self._lock:
            self.admitted -= 1
        self._places.release()

    def shutdown(self) -> None:
        """Wait for the pipelines still running (those answered 504); drop the ones still waiting."""
        self._pool.shutdown(wait=True, cancel_futures=True)
