"""The openai backend shared by many threads, against a loopback fake server: ``concurrency=`` bounds the requests on
the wire across all callers, batches reuse one executor, backoff holds no slot, and the server's prompt-cache reuse
(llama.cpp ``timings.cache_n``, vLLM ``usage.prompt_tokens_details.cached_tokens``) reaches ``cached_tokens``."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from divcon.backends.base import ChatRequest, ModelSpec
from divcon.backends.openai_backend import OpenAIBackend, RequestRejected
from tests.fake_openai_server import FakeOpenAIServer, completion, error_body

DELAY_S = 0.2  # long enough that requests sent together certainly overlap on the server


def ask(text: str) -> ChatRequest:
    return ChatRequest.of([{"role": "user", "content": text}], max_tokens=5)


pytestmark = pytest.mark.usefixtures("hermetic_openai_env")


@pytest.fixture
def server():
    srv = FakeOpenAIServer(delay=DELAY_S, echo=True).start()
    yield srv
    srv.stop()


def backend(base_url: str, **options: str) -> OpenAIBackend:
    opts = "".join(f",{k}={v}" for k, v in {"base_url": base_url, **options}.items())
    return OpenAIBackend(ModelSpec.parse(f"openai:fake{opts}"))


def test_threads_calling_one_request_each_share_the_bound(server):
    """An in-flight runner: 16 question threads, each generate([one]); the server never sees more than 4 at once,
    and does see 4 at once (the bound is used, not just respected)."""
    be = backend(server.base_url, concurrency="4")
    start = threading.Barrier(16)

    def question(i: int) -> str:
        start.wait()
        return be.generate([ask(f"q{i}")])[0].text

    t0 = time.monotonic()
    with ThreadPoolExecutor(16) as callers:
        texts = list(callers.map(question, range(16)))
    elapsed = time.monotonic() - t0
    assert texts == [f"q{i}" for i in range(16)]
    assert len(server.requests) == 16
    assert server.max_in_flight == 4
    assert elapsed >= 4 * DELAY_S - 0.05  # 16 requests, 4 at a time


def test_batch_is_bounded_and_answered_in_order(server):
    be = backend(server.base_url, concurrency="6")
    gens = be.generate([ask(f"r{i}") for i in range(12)])
    assert [g.text for g in gens] == [f"r{i}" for i in range(12)]
    assert server.max_in_flight == 6
    assert all(g.tokens_in == 3 and g.tokens_out == 1 and g.model == be.spec for g in gens)


def test_concurrent_batches_share_one_bound(server):
    """Two threads each sending a batch of 6 through one backend with concurrency=4: 4 at once in all, not 8."""
    be = backend(server.base_url, concurrency="4")
    with ThreadPoolExecutor(2) as callers:
        results = list(callers.map(lambda k: be.generate([ask(f"{k}-{i}") for i in range(6)]), "ab"))
    assert [[g.text for g in gens] for gens in results] == [[f"{k}-{i}" for i in range(6)] for k in "ab"]
    assert server.max_in_flight == 4


def test_executor_is_created_once_and_reused(server):
    server.delay = 0.02
    be = backend(server.base_url, concurrency="3")
    be.generate([ask("single")])  # a single request runs in the caller's thread: no executor needed
    assert be._pool is None
    be.generate([ask(str(i)) for i in range(6)])
    pool = be._pool
    assert pool is not None
    threads = pool_threads()  # not threading.active_count(): the fake server starts a thread per connection
    assert 0 < threads <= 6
    for _ in range(5):
        assert [g.text for g in be.generate([ask(str(i)) for i in range(6)])] == [str(i) for i in range(6)]
        assert be._pool is pool
    assert pool_threads() == threads
    assert server.max_in_flight <= 3


def pool_threads() -> int:
    return sum(t.name.startswith("divcon-openai-") for t in threading.enumerate())


def test_backoff_does_not_hold_a_slot(server):
    """With one slot, a request sleeping out a 429's Retry-After must not keep another thread's request waiting."""
    server.delay = 0.0
    server.script.append((429, error_body("slow down", "rate_limit"), {"Retry-After": "1"}))
    be = backend(server.base_url, concurrency="1", outage="5")
    done: dict[str, float] = {}
    t0 = time.monotonic()

    def send(name: str) -> None:
        be.generate([ask(name)])
        done[name] = time.monotonic() - t0

    first = threading.Thread(target=send, args=("first",))
    first.start()
    while not server.requests:  # the first request has had its 429 and is now backing off
        time.sleep(0.01)
    send("second")
    first.join()
    assert done["second"] < 0.6 and done["first"] >= 0.9


def test_first_failure_ends_the_batch_and_queued_requests_are_not_sent(server):
    server.script.append((400, error_body("prompt too long"), {}))
    be = backend(server.base_url, concurrency="2", outage="5")
    t0 = time.monotonic()
    with pytest.raises(RequestRejected, match="prompt too long"):
        be.generate([ask(str(i)) for i in range(8)])
    assert time.monotonic() - t0 < 3 * DELAY_S  # the failing answer, not the 4 rounds of the whole batch
    time.sleep(2 * DELAY_S)  # anything still queued would have been sent by now
    assert len(server.requests) <= 3  # the failing one, the one beside it, at most one racing the failure
    assert be.generate([ask("after")])[0].text == "after"  # the shared executor and slots are intact


def test_llamacpp_timings_give_cached_tokens(server):
    body = completion("fake", "hi") | {"timings": {"prompt_n": 5, "cache_n": 37, "predicted_n": 1,
                                                   "prompt_ms": 12.5, "predicted_ms": 3.0}}
    server.script.append((200, body, {}))
    gen = backend(server.base_url).generate([ask("x")])[0]
    assert gen.cached_tokens == 37 and gen.text == "hi"


def test_vllm_usage_details_give_cached_tokens(server):
    body = completion("fake", "hi")
    body["usage"]["prompt_tokens_details"] = {"cached_tokens": 12}
    server.script.append((200, body, {}))
    assert backend(server.base_url).generate([ask("x")])[0].cached_tokens == 12


def test_cached_tokens_default_to_zero_and_ignore_junk(server):
    server.script.append((200, completion("fake") | {"timings": {"cache_n": "lots"}}, {}))
    be = backend(server.base_url)
    assert be.generate([ask("x")])[0].cached_tokens == 0
    assert be.generate([ask("y")])[0].cached_tokens == 0  # a plain OpenAI answer says nothing of a cache


def test_concurrency_is_exposed_with_a_default():
    assert backend("http://127.0.0.1:9/v1").concurrency == 8
    be = backend("http://127.0.0.1:9/v1", concurrency="3")
    assert be.concurrency == 3 and isinstance(be.concurrency, int)
    assert "concurrency" in OpenAIBackend.OPTIONS and "workers" not in OpenAIBackend.OPTIONS


@pytest.mark.parametrize("value", ["0", "x", "-1", "2.5"])
def test_bad_concurrency_names_the_option(value):
    with pytest.raises(ValueError, match=r"option concurrency=.*whole number >= 1"):
        backend("http://127.0.0.1:9/v1", concurrency=value)
