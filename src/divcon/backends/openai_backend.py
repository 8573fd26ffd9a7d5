"""Any OpenAI-compatible server (OpenAI, vLLM, llama.cpp server, Ollama) through the official ``openai`` client.

``openai:<model>[,base_url=http://host:8000/v1][,concurrency=8][,timeout=120][,outage=180]``. The key comes from
$DIVCON_OPENAI_API_KEY or $OPENAI_API_KEY (never from the spec, so it cannot leak into logs or cache keys), the base
URL from the option or $OPENAI_BASE_URL.

One backend instance may be shared by many threads (an in-flight runner calls ``generate([one request])`` from each
question's thread). ``concurrency=`` bounds the requests on the wire across all of them: every HTTP attempt holds a
slot of one semaphore per instance, released before any backoff sleep, so a request waiting out an outage never
blocks the others. Batches of several requests run on one lazily created executor per instance, never a new pool per
call.

When the server says how much of the prompt it served from its prompt cache, :attr:`Generation.cached_tokens` carries
it: vLLM (and OpenAI) report ``usage.prompt_tokens_details.cached_tokens``; llama.cpp's server adds a non-standard
``timings`` object whose ``cache_n`` is that count (the openai client keeps such unknown fields in ``model_extra``).

:meth:`OpenAIBackend.stream` sends one request with ``stream=True`` and hands each text delta to a callback as it
arrives; the stream is read while the request holds its slot, so streamed requests count against ``concurrency`` like
any other, and it returns the same :class:`Generation` as ``generate`` (usage from the final chunk that
``stream_options={"include_usage": true}`` asks for; a server that sends none gives 0 tokens, as a response without
``usage`` does). It is retried like any request until its first text has been handed out; a stream that breaks after
that cannot be retried without repeating text, so it fails at once with :class:`BackendUnavailable`.

Retrying is done here, not by the client (``max_retries=0``): the client's few quick retries give up after ~20 s with
a huge traceback, while a local server that is restarting or reloading a model needs minutes. So connection errors,
timeouts, 429 and 5xx are retried with exponential backoff for an *outage budget* of seconds (``outage=``), after
which :class:`BackendUnavailable` says in one line which server was down and why. A request the server rejects
(400/413/422) is not an outage and raises :class:`RequestRejected` at once; 401/403/404 mean a wrong key, model or URL,
which no amount of waiting fixes, so they raise :class:`BackendUnavailable` at once.
"""

from __future__ import annotations

import math
import os
import random
import threading
import time
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from email.utils import parsedate_to_datetime
from typing import Any, Callable

from divcon.backends.base import BackendUnavailable, ChatRequest, Generation, ModelSpec, OnText, RequestRejected

BACKOFF_START_S = 0.5
BACKOFF_CAP_S = 10.0
REJECTED_STATUSES = frozenset({400, 413, 422})  # the request itself is bad: retrying cannot help
RETRYABLE_STATUSES = frozenset({408, 409, 429})  # plus every 5xx


def _one_line(text: object, limit: int = 500) -> str:
    """Error texts may hold newlines or whole JSON bodies; messages must stay one readable line."""
    s = " ".join(str(text).split())
    return s if len(s) <= limit else s[: limit - 3] + "..."


def _server_message(e: Exception) -> str:
    """The server's own error text. The client keeps the body's ``error`` object in ``.body``; its ``message`` is far
    more readable than the client's ``Error code: 400 - {...}`` string."""
    body = getattr(e, "body", None)
    msg = body.get("message") if isinstance(body, dict) else body if isinstance(body, str) else None
    return _one_line(msg or getattr(e, "message", None) or e)


def _root_cause(e: BaseException) -> str:
    """``APIConnectionError`` only says "Connection error."; the socket-level reason (refused, DNS, reset) sits at the
    bottom of the exception chain."""
    seen: set[int] = set()
    while (nxt := e.__cause__ or e.__context__) is not None and id(nxt) not in seen:
        seen.add(id(e))
        e = nxt
    return _one_line(e)


def _retry_after(e: Exception) -> float | None:
    """Seconds the server asked us to wait (``retry-after-ms``, or ``retry-after`` as seconds or an HTTP date)."""
    response = getattr(e, "response", None)
    headers = getattr(response, "headers", None)
    if not headers:
        return None
    try:
        if (ms := headers.get("retry-after-ms")) is not None:
            return max(0.0, float(ms) / 1000)
        if (value := headers.get("retry-after")) is not None:
            try:
                return max(0.0, float(value))
            except ValueError:
                return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (ValueError, TypeError, OverflowError):
        pass
    return None


def _count(value: object) -> int | None:
    """A token count from a server's JSON: a non-negative whole number, anything else is ignored (not trusted)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        return None
    return int(value)


def _cached_tokens(resp: object) -> int:
    """Prompt tokens the server reused from its prompt cache, 0 when it does not say.

    ``usage.prompt_tokens_details.cached_tokens`` is a declared field of the client's ``CompletionUsage`` (vLLM,
    OpenAI, recent llama.cpp); llama.cpp's ``timings.cache_n`` is not, and the client keeps it as a plain dict in the
    response's ``model_extra`` (pydantic's extra fields, also reachable as ``resp.timings``). When both are present
    they describe the same thing, so the larger wins: a server that fills one of them only leaves the other at 0."""
    found: list[int | None] = []
    details = getattr(getattr(resp, "usage", None), "prompt_tokens_details", None)
    if isinstance(details, dict):
        found.append(_count(details.get("cached_tokens")))
    elif details is not None:
        found.append(_count(getattr(details, "cached_tokens", None)))
    extra = getattr(resp, "model_extra", None)
    timings = extra.get("timings") if isinstance(extra, dict) else getattr(resp, "timings", None)
    if isinstance(timings, dict):
        found.append(_count(timings.get("cache_n")))
    return max((n for n in found if n is not None), default=0)


class _Batch:
    """One generate() call's shared state. The first request to fail for good records its error and sets ``give_up``
    *before* releasing its slot, so that no queued request of the batch takes that slot and is sent; the caller raises
    that error, never a sibling's "gave up" that may have finished first."""

    def __init__(self) -> None:
        self.give_up = threading.Event()
        self.error: BaseException | None = None
        self._lock = threading.Lock()

    def fail(self, error: BaseException) -> BaseException:
        with self._lock:
            if self.error is None:
                self.error = error
        self.give_up.set()
        return error


class OpenAIBackend:
    """A model behind an OpenAI-compatible chat completions endpoint. Thread-safe: at most ``concurrency`` requests
    of this instance are on the wire at once, whichever threads send them."""

    OPTIONS: dict[str, str] = {
        "base_url": "server URL, e.g. http://127.0.0.1:8000/v1 (default $OPENAI_BASE_URL, else OpenAI's)",
        "concurrency": "most requests on the wire at once, across every thread using this model (default 8)",
        "timeout": "seconds one request may take before it counts as failed and is retried (default 120)",
        "outage": "seconds to keep retrying a down or overloaded server before giving up (default 180; 0 = no retry)",
    }

    def __init__(self, spec: ModelSpec, local: bool = False):
        """``local``: a server divcon started itself on loopback (the llamacpp engine): no key from the environment
        is sent to it and no proxy setting is applied to it."""
        from openai import DefaultHttpxClient, OpenAI

        self.spec = str(spec)
        self.model = spec.name
        self.label = f"openai:{spec.name}"
        self.concurrency = int(spec.number("concurrency", 8, int, lambda v: v >= 1, "a whole number >= 1"))
        timeout = spec.number("timeout", 120.0, float, lambda v: 0 < v < math.inf, "a number of seconds > 0")
        self.outage = spec.number("outage", 180.0, float, lambda v: v >= 0, "a number of seconds >= 0")
        base_url = spec.options.get("base_url") or os.environ.get("OPENAI_BASE_URL")
        api_key = None if local else os.environ.get("DIVCON_OPENAI_API_KEY") or os.environ.get("OPENAI_API_KEY")
        if not api_key:
            if base_url:  # local servers accept any key
                api_key = "not-needed"
            else:
                raise RuntimeError(f"{self.spec}: set OPENAI_API_KEY (or pass base_url=... for a local server)")
        http_client = DefaultHttpxClient(trust_env=False) if local else None
        self.client = OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=timeout,
                             http_client=http_client)
        # the effective URL (option, $OPENAI_BASE_URL or the client's default) is what an error message must name
        self.base_url = str(self.client.base_url).rstrip("/")
        self._slots = threading.BoundedSemaphore(self.concurrency)  # held only while a request is on the wire
        self._pool: ThreadPoolExecutor | None = None  # for batches; created on the first one, then reused
        self._pool_lock = threading.Lock()

    def _executor(self) -> ThreadPoolExecutor:
        """The one executor of this instance. It has more threads than slots, so that requests sleeping out a backoff
        do not keep the others of a batch (or of other callers' batches) from the free slots; its threads are created
        only as needed and are reused across calls."""
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=4 * self.concurrency,
                                                thread_name_prefix=f"divcon-openai-{self.model}")
            return self._pool

    def close(self) -> None:
        """Let the executor's idle threads end (a later batch starts a new executor). Optional: they are reused
        while the backend lives and ended at interpreter exit anyway."""
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    def _slot(self, batch: _Batch) -> None:
        """Wait for a free slot, unless the batch is given up meanwhile: a queued request must then never be sent."""
        while not self._slots.acquire(timeout=0.05):
            if batch.give_up.is_set():
                break
        else:
            if not batch.give_up.is_set():
                return
            self._slots.release()
        raise BackendUnavailable(f"{self.label}: not sent: another request of the batch failed")

    def _params(self, req: ChatRequest) -> dict[str, Any]:
        return {"model": self.model, "messages": req.message_dicts(), "max_tokens": req.max_tokens,
                "temperature": req.temperature, "stop": list(req.stop) or None, "seed": req.seed}

    def _create(self, req: ChatRequest, batch: _Batch, send: Callable[[], Any] | None = None) -> tuple[Any, float]:
        """One chat completion, retried through outages until the budget since this request's first failure is spent.
        Returns the response and when its first attempt went on the wire (time waiting for a slot is not the model's).
        ``send`` makes one attempt instead of a plain create (a streamed request, read to its end under the slot).

        Each attempt holds one of the ``concurrency`` slots; the backoff between attempts does not. ``batch.give_up``
        is set when another request of the same batch has failed for good, so that the others stop waiting out their
        own budgets against the same dead server, and queued ones are never sent."""
        import openai

        if send is None:
            def send() -> Any:
                return self.client.chat.completions.create(**self._params(req))

        started: float | None = None
        first_failure: float | None = None
        backoff = BACKOFF_START_S
        while True:
            self._slot(batch)
            started = time.perf_counter() if started is None else started
            try:
                return send(), started
            except openai.APIStatusError as e:
                code = e.status_code
                if code in REJECTED_STATUSES:
                    raise batch.fail(RequestRejected(
                        f"{self.label}: server {self.base_url} rejected the request (HTTP {code}): {_server_message(e)}"
                    )) from e
                if code not in RETRYABLE_STATUSES and code < 500:
                    raise batch.fail(BackendUnavailable(
                        f"{self.label}: server {self.base_url} answered HTTP {code} (check the API key, model name and "
                        f"base_url): {_server_message(e)}"
                    )) from e
                err: Exception = e
                state, cause = "failing", f"HTTP {code}: {_server_message(e)}"
            except openai.APIConnectionError as e:  # includes APITimeoutError
                err = e
                root = _root_cause(e)
                state, cause = "unreachable", e.message + (f" ({root})" if root and root != e.message else "")
            finally:
                self._slots.release()
            now = time.monotonic()
            first_failure = now if first_failure is None else first_failure
            down_for = now - first_failure
            remaining = self.outage - down_for
            if batch.give_up.is_set():
                raise BackendUnavailable(
                    f"{self.label}: server {self.base_url} {state}; gave up because another request of the batch "
                    f"failed: {_one_line(cause)}"
                ) from err
            if remaining <= 0:
                raise batch.fail(BackendUnavailable(
                    f"{self.label}: server {self.base_url} {state} for {down_for:.1f} s "
                    f"(outage budget {self.outage:g} s): {_one_line(cause)}"
                )) from err
            hinted = _retry_after(err)
            delay = min(hinted if hinted is not None else backoff * random.uniform(0.75, 1.0), remaining)
            backoff = min(backoff * 2, BACKOFF_CAP_S)
            if batch.give_up.wait(delay):
                raise BackendUnavailable(
                    f"{self.label}: server {self.base_url} {state}; gave up because another request of the batch "
                    f"failed: {_one_line(cause)}"
                ) from err

    def _generation(self, text: str, usage: Any, finish: str, cached: int, t0: float) -> Generation:
        """The Generation of one answered request, streamed or not (no ``usage`` from the server: 0 tokens)."""
        return Generation(
            text=text,
            tokens_in=usage.prompt_tokens if usage else 0,
            tokens_out=usage.completion_tokens if usage else 0,
            seconds=time.perf_counter() - t0,
            model=self.spec,
            finish_reason=finish,
            cached_tokens=cached,
        )

    def _one(self, req: ChatRequest, batch: _Batch) -> Generation:
        resp, t0 = self._create(req, batch)
        choice = resp.choices[0]
        return self._generation(choice.message.content or "", resp.usage, choice.finish_reason or "stop",
                                _cached_tokens(resp), t0)

    def stream(self, req: ChatRequest, on_text: OnText) -> Generation:
        """One request streamed: each text delta goes to ``on_text`` (on this thread) as the server sends it, and the
        result is what :meth:`generate` would give for it. Retried like any request until the first delta has been
        handed out; a stream that breaks (or ends without a finish reason) after that raises
        :class:`BackendUnavailable` at once, as a retry would repeat text the caller already has."""
        import openai

        batch = _Batch()
        handed_out = False

        def send() -> tuple[str, Any, str | None, int]:
            nonlocal handed_out
            parts: list[str] = []
            usage: Any = None
            finish: str | None = None
            cached = 0
            chunks = self.client.chat.completions.create(**self._params(req), stream=True,
                                                         stream_options={"include_usage": True})
            try:
                for chunk in chunks:
                    usage = chunk.usage or usage  # the last chunk's (OpenAI, vLLM); llama.cpp's carries timings too
                    cached = max(cached, _cached_tokens(chunk))
                    for choice in chunk.choices:
                        if choice.index != 0:
                            continue
                        text = choice.delta.content if choice.delta is not None else None
                        if text:
                            parts.append(text)
                            handed_out = True
                            on_text(text)
                        finish = choice.finish_reason or finish
            except openai.APIError as e:
                if isinstance(e, openai.APIConnectionError) and not handed_out:
                    raise  # nothing handed out yet: retried like a failed request
                got = sum(map(len, parts))
                why = _root_cause(e) if isinstance(e, openai.APIConnectionError) else _server_message(e)
                raise batch.fail(BackendUnavailable(
                    f"{self.label}: server {self.base_url} broke off the stream after {got} characters: {why}")) from e
            finally:
                chunks.close()
            if finish is None:
                raise batch.fail(BackendUnavailable(
                    f"{self.label}: server {self.base_url} ended the stream without finishing the answer "
                    f"(after {sum(map(len, parts))} characters)"))
            return "".join(parts), usage, finish, cached

        (text, usage, finish, cached), t0 = self._create(req, batch, send)
        return self._generation(text, usage, finish, cached, t0)

    def generate(self, requests: list[ChatRequest]) -> list[Generation]:
        """Answer in order; safe to call from many threads at once. A single request is sent from the calling thread;
        a batch runs on this instance's executor. The first failure fails the batch at once: its other requests are
        told to give up rather than each spend a whole outage budget, and queued ones are never sent."""
        batch = _Batch()
        if len(requests) <= 1:
            return [self._one(r, batch) for r in requests]
        futures: list[Future[Generation]] = []
        try:
            pool = self._executor()
            for r in requests:
                futures.append(pool.submit(self._one, r, batch))
            wait(futures, return_when=FIRST_EXCEPTION)
            if batch.error is not None:
                raise batch.error
            for f in futures:  # an error that is not the server's (a bug, an unexpected response) also ends it
                if f.done() and not f.cancelled() and (exc := f.exception()) is not None:
                    raise exc
            return [f.result() for f in futures]
        finally:
            batch.give_up.set()
            for f in futures:
                f.cancel()  # the shared executor stays; only this batch's queued requests are dropped
