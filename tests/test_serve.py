"""``divcon serve`` end to end: a real uvicorn server on a loopback port, called with the official ``openai`` client
(the happy path, as an application would) and with raw HTTP (what a client library would never send). Models are
scripted fakes; ``gate:`` calls wait on an event, so a test can hold requests in flight and fill the queue
deterministically; ``drip:`` streams its answer and waits, after its first word, until the test's client has it."""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import openai
import pytest
import uvicorn
from typer.testing import CliRunner

from divcon.backends import BackendUnavailable, RequestRejected, default_log, register_backend
from divcon.backends.base import ChatRequest, Generation
from divcon.cli import app as cli_app
from divcon.serve.app import create_app
from divcon.serve.cli import is_loopback
from divcon.serve.config import TEACHER, parse_config
from tests.fake_openai_server import free_port
from tests.fakes import ScriptedBackend, is_decompose_prompt

pytestmark = pytest.mark.usefixtures("hermetic_openai_env")

TWO_STAGE = {"models": {"m": {"decomposer": "fake:student", "solver": "fake:teacher", "family": "math"}}}
GATED = {"models": {"slow": {"mode": "direct", "solver": "gate:m", "family": "math"}}}
DRIP = {"models": {"m": {"decomposer": "fake:student", "solver": "drip:teacher", "family": "math"}}}
KEY = "test-key-4f2a"


class GateBackend:
    """``gate:<name>``: every call first waits for ``gate`` to open, then answers; ``entered`` counts calls begun."""

    gate = threading.Event()
    entered = threading.Semaphore(0)

    def __init__(self, spec):
        self.spec = str(spec)

    def generate(self, requests: list[ChatRequest]) -> list[Generation]:
        GateBackend.entered.release()
        assert GateBackend.gate.wait(10), "the test never opened the gate"
        return [Generation("The answer is 7.", 10, 2, 0.01, self.spec) for _ in requests]


class FailingBackend:
    """``fail:<how>``: raises what a backend raises for a refused request, a model that is down, or a bug."""

    def __init__(self, spec):
        self.spec = str(spec)

    def generate(self, requests: list[ChatRequest]) -> list[Generation]:
        how = self.spec.split(":", 1)[1]
        raise {"rejected": RequestRejected("prompt of 5000 tokens exceeds the context window"),
               "down": BackendUnavailable("fake server down"), "bug": KeyError("internal-detail")}[how]


class DripBackend:
    """``drip:<name>``, a solver that streams: its answer (with whitespace around it that the message strips) comes
    word by word, and after the first word it waits for ``go`` (``waited`` says whether it came within 3 s) and then
    raises ``fail`` if set; ``finished`` is set once the whole answer is written. ``generate`` (a caller that does
    not stream) also waits for ``go`` before answering: a server that sent nothing before the answer was complete
    would never see ``go`` in time."""

    TEXT = "  The answer is 18.\n"
    go = threading.Event()
    finished = threading.Event()
    waited: list[bool] = []
    fail: BaseException | None = None

    def __init__(self, spec):
        self.spec = str(spec)

    def generate(self, requests: list[ChatRequest]) -> list[Generation]:
        assert not any(is_decompose_prompt(r) for r in requests), "drip: is a solver"
        DripBackend.waited.append(DripBackend.go.wait(3))
        DripBackend.finished.set()
        return [Generation(self.TEXT, 100, 20, 0.01, self.spec) for _ in requests]

    def stream(self, request: ChatRequest, on_text) -> Generation:
        first, *rest = re.findall(r"\s*\S+\s*", self.TEXT)
        on_text(first)
        DripBackend.waited.append(DripBackend.go.wait(3))
        if DripBackend.fail is not None:
            raise DripBackend.fail
        for word in rest:
            time.sleep(0.02)
            on_text(word)
        DripBackend.finished.set()
        return Generation(self.TEXT, 100, 20, 0.01, self.spec)


@pytest.fixture(autouse=True)
def backends():
    register_backend("fake", ScriptedBackend)
    register_backend("gate", GateBackend)
    register_backend("fail", FailingBackend)
    register_backend("drip", DripBackend)
    GateBackend.gate = threading.Event()
    GateBackend.entered = threading.Semaphore(0)
    DripBackend.go, DripBackend.finished, DripBackend.waited, DripBackend.fail = (threading.Event(),
                                                                                threading.Event(), [], None)
    yield
    GateBackend.gate.set()  # a failed test must not leave a pipeline waiting forever
    DripBackend.go.set()


@dataclass
class Served:
    url: str
    server: uvicorn.Server


@contextmanager
def serving(config: dict, api_key: str | None = None) -> Iterator[Served]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(parse_config(config), api_key), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.01)
    try:
        yield Served(f"http://127.0.0.1:{port}", server)
    finally:
        server.should_exit = True
        thread.join(10)


def client(served: Served, key: str = "none") -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{served.url}/v1", api_key=key, max_retries=0, timeout=10)


_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http(url: str, body: bytes | dict | Iterator[bytes] | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, dict, bytes]:
    """Status, headers and body of one raw request (a POST when there is a body)."""
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with _NO_PROXY.open(req, timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def ask(question: str = "How many apples?", model: str = "m", **extra) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": question}], **extra}


def assert_error(status: int, body: bytes, expected_status: int, code: str | None) -> dict:
    """An OpenAI-style error: the status, and {"error": {message, type, code}} with a message that says something."""
    assert status == expected_status, body
    error = json.loads(body)["error"]
    assert error["message"] and error["type"] and error["code"] == code
    assert b"Traceback" not in body
    return error


# the happy path, through the official client ------------------------------------------------------------------------

def test_the_openai_client_lists_the_models_and_gets_the_answer():
    config = {"models": {**TWO_STAGE["models"], "d": {"mode": "direct", "solver": "fake:teacher"}}}
    with serving(config) as served:
        c = client(served)
        models = c.models.list()
        reply = c.chat.completions.create(model="m", messages=[{"role": "user", "content": "How many apples?"}])
    assert [m.id for m in models] == ["m", "d"]
    assert models.data[0].model_extra["divcon"] == {"mode": "two-stage", "family": "math",
                                                    "decomposer": "fake:student", "solver": "fake:teacher"}
    assert reply.model == "m" and reply.object == "chat.completion"
    assert reply.choices[0].message.content == "The answer is 18." and reply.choices[0].finish_reason == "stop"
    extras = reply.model_extra["divcon"]
    assert extras["subquestions"] == ["How many?", "How much?"] and extras["answer"] == "18"
    assert extras["mode"] == "two-stage"
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens, reply.usage.total_tokens) == (200, 40, 240)


def test_usage_and_extras_add_up_per_stage_and_model(tmp_path, monkeypatch):
    prices = {"models": {"fake:student": {"in_per_1k": 0.001, "out_per_1k": 0.002},
                         "fake:teacher": {"in_per_1k": 0.01, "out_per_1k": 0.03}}}
    (tmp_path / "prices.json").write_text(json.dumps(prices))
    monkeypatch.setenv("DIVCON_PRICES", str(tmp_path / "prices.json"))
    config = {"models": {**TWO_STAGE["models"],
                         "u": {"decomposer": "fake:student", "solver": "fake:unpriced", "family": "math"}}}
    with serving(config) as served:
        priced = json.loads(http(f"{served.url}/v1/chat/completions", ask())[2])
        unpriced = json.loads(http(f"{served.url}/v1/chat/completions", ask(model="u"))[2])
    x = priced["divcon"]
    assert [(s["stage"], s["model"], s["tokens_in"], s["tokens_out"], s["calls"]) for s in x["stages"]] == [
        ("decompose", "fake:student", 100, 20, 1), ("solve", "fake:teacher", 100, 20, 1)]
    assert x["stages"][0]["dollars"] == pytest.approx(0.1 * 0.001 + 0.02 * 0.002)
    assert x["stages"][1]["dollars"] == pytest.approx(0.1 * 0.01 + 0.02 * 0.03)
    assert x["dollars"] == pytest.approx(sum(s["dollars"] for s in x["stages"]))
    assert x["models"]["fake:teacher"] == {"tokens_in": 100, "tokens_out": 20, "seconds": pytest.approx(0.01),
                                          "calls": 1, "dollars": pytest.approx(0.0016)}
    usage = priced["usage"]
    assert usage["prompt_tokens"] == x["tokens_in"] == sum(m["tokens_in"] for m in x["models"].values()) == 200
    assert usage["completion_tokens"] == x["tokens_out"] == 40 and usage["total_tokens"] == 240
    assert x["seconds"] > 0  # the pipeline's wall time, measured by the server
    # a model with no price: its dollars and every total that includes it are null, never 0
    y = unpriced["divcon"]
    assert y["stages"][0]["dollars"] == pytest.approx(0.00014) and y["stages"][1]["dollars"] is None
    assert y["models"]["fake:unpriced"]["dollars"] is None and y["dollars"] is None


def test_the_question_passage_and_max_tokens_reach_the_models_through_the_call_log():
    with serving(TWO_STAGE) as served:
        client(served).chat.completions.create(
            model="m", max_tokens=64, extra_body={"divcon": {"context": "The farm has 3 pens of 4 sheep."}},
            messages=[{"role": "system", "content": "IGNORED-SYSTEM"}, {"role": "user", "content": "OLD-QUESTION"},
                      {"role": "assistant", "content": "ok"}, {"role": "user", "content": "How many sheep?"}])
    rows = default_log().db.execute("SELECT model, prompt, params FROM calls ORDER BY id").fetchall()
    assert [r[0] for r in rows] == ["fake:student", "fake:teacher"]  # every served call is logged
    for _, prompt, _ in rows:
        assert "Passage: The farm has 3 pens of 4 sheep." in prompt and "Question: How many sheep?" in prompt
        assert "IGNORED-SYSTEM" not in prompt and "OLD-QUESTION" not in prompt
    assert json.loads(rows[1][2])["max_tokens"] == 64  # the solver's answer is bounded by the client's max_tokens
    assert json.loads(rows[0][2])["max_tokens"] == 192  # the decomposer keeps its own budget


# streaming ------------------------------------------------------------------------------------------------------------

def sse(body: bytes) -> tuple[list[dict], str]:
    """The JSON events of a raw stream, and its last line (which must be ``data: [DONE]``)."""
    events = [line for line in body.decode().split("\n\n") if line]
    assert all(e.startswith("data: ") for e in events)
    return [json.loads(e[len("data: "):]) for e in events[:-1]], events[-1]


def test_stream_is_well_formed_server_sent_chunks_ending_with_done():
    with serving(TWO_STAGE) as served:
        status, headers, body = http(f"{served.url}/v1/chat/completions", ask(stream=True))
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    chunks, last = sse(body)
    assert last == "data: [DONE]"
    assert {(c["object"], c["id"], c["model"]) for c in chunks} == {("chat.completion.chunk", chunks[0]["id"], "m")}
    assert chunks[0]["id"].startswith("chatcmpl-")
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    # a backend that cannot stream: its answer comes whole, as one piece, once it is done
    assert [c["choices"][0]["delta"].get("content") for c in chunks[1:-1]] == ["The answer is 18."]
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None] * (len(chunks) - 1) + ["stop"]
    assert chunks[-1]["usage"]["total_tokens"] == 240
    assert chunks[-1]["divcon"]["subquestions"] == ["How many?", "How much?"]


def test_the_openai_client_streams_the_same_text():
    with serving(TWO_STAGE) as served:
        stream = client(served).chat.completions.create(model="m", stream=True,
                                                        messages=[{"role": "user", "content": "How many apples?"}])
        pieces = [c.choices[0].delta.content or "" for c in stream if c.choices]
    assert "".join(pieces) == "The answer is 18."


def test_the_solvers_words_reach_the_client_while_it_is_still_writing():
    """The stub solver stops after its first word until the client has received it: sending the text only once the
    answer is complete would leave it waiting (``waited == [False]``) and the client's first word late."""
    question = [{"role": "user", "content": "How many apples?"}]
    early = None
    with serving(DRIP) as served:
        chunks = []
        for c in client(served).chat.completions.create(model="m", stream=True, messages=question):
            chunks.append(c)
            if early is None and c.choices and c.choices[0].delta.content:
                early = not DripBackend.finished.is_set()
                DripBackend.go.set()
        reply = client(served).chat.completions.create(model="m", messages=question)  # the same, not streamed
    assert early is True and DripBackend.waited == [True]
    words = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    # the stripped message's text, piece by piece: whitespace waits until a word follows it
    assert words == ["The", " answer", " is", " 18."]
    assert "".join(words) == reply.choices[0].message.content == "The answer is 18."
    assert {(c.id, c.object, c.model) for c in chunks} == {(chunks[0].id, "chat.completion.chunk", "m")}
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks] == [None] * (len(chunks) - 1) + ["stop"]
    assert chunks[-1].usage.model_dump() == reply.usage.model_dump()
    streamed, plain = chunks[-1].model_extra["divcon"], reply.model_extra["divcon"]
    assert streamed["answer"] == plain["answer"] == "18" and streamed["subquestions"] == plain["subquestions"]
    assert [s["cached"] for s in plain["stages"]] == [True, True]  # the streamed calls were logged; this replayed them
    assert [s["cached"] for s in streamed["stages"]] == [False, False]
    assert DripBackend.waited == [True]  # the replay called no model


@pytest.mark.parametrize("fail, code, says", [
    (BackendUnavailable("fake server down"), "backend_unavailable", "fake server down"),
    (KeyError("internal-detail"), "internal_error", "internal server error")])
def test_a_stream_that_fails_midway_ends_with_an_error_event(fail, code, says):
    DripBackend.fail = fail
    DripBackend.go.set()
    with serving(DRIP) as served:
        status, _, body = http(f"{served.url}/v1/chat/completions", ask(stream=True))
        with pytest.raises(openai.APIError, match=says):
            for _ in client(served).chat.completions.create(model="m", stream=True,
                                                           messages=[{"role": "user", "content": "Q?"}]):
                pass
    chunks, last = sse(body)
    assert status == 200 and last == "data: [DONE]"  # the stream had begun: the error is its last event
    assert chunks[1]["choices"][0]["delta"] == {"content": "The"}
    assert chunks[2]["error"]["code"] == code and says in chunks[2]["error"]["message"] and len(chunks) == 3
    assert b"internal-detail" not in body and b"Traceback" not in body


def test_a_stream_past_its_timeout_ends_with_a_timeout_event():
    with serving({**DRIP, "timeout": 0.5}) as served:
        t0 = time.monotonic()
        status, _, body = http(f"{served.url}/v1/chat/completions", ask(stream=True))
        assert time.monotonic() - t0 < 2.5  # the timeout, not the solver's 3 s wait
        assert busy(served) == 1  # the pipeline runs on, still counted against the bound
        DripBackend.go.set()
        wait_until(lambda: busy(served) == 0)
    chunks, last = sse(body)
    assert status == 200 and last == "data: [DONE]"
    assert [c["choices"][0]["delta"].get("content") for c in chunks[:-1]] == ["", "The"]
    assert chunks[-1]["error"]["code"] == "timeout" and chunks[-1]["error"]["type"] == "timeout_error"


@pytest.mark.parametrize("config, status, code", [
    ({"models": {"m": {"mode": "direct", "solver": "fail:down"}}}, 503, "backend_unavailable"),
    ({"models": {"m": {"mode": "direct", "solver": "fail:rejected"}}}, 400, "request_rejected"),
    ({"models": {"m": {"mode": "direct", "solver": "gate:m"}}, "timeout": 0.3}, 504, "timeout")])
def test_a_stream_that_fails_before_its_first_word_gets_a_status_code(config, status, code):
    with serving(config) as served:
        got, headers, body = http(f"{served.url}/v1/chat/completions", ask(stream=True))
        GateBackend.gate.set()
    assert_error(got, body, status, code)
    assert headers["content-type"].startswith("application/json")


# security and malformed requests --------------------------------------------------------------------------------------

def test_an_api_key_is_required_and_checked():
    with serving(TWO_STAGE, api_key=KEY) as served:
        url = f"{served.url}/v1/chat/completions"
        missing = http(url, ask())
        wrong = http(url, ask(), {"Authorization": "Bearer not-the-key"})
        models_without_key = http(f"{served.url}/v1/models")
        health = http(f"{served.url}/health")
        with pytest.raises(openai.AuthenticationError):
            client(served, "not-the-key").models.list()
        reply = client(served, KEY).chat.completions.create(model="m", messages=[{"role": "user", "content": "Q?"}])
    for status, headers, body in (missing, wrong, models_without_key):
        assert_error(status, body, 401, "invalid_api_key")
        assert headers["www-authenticate"] == "Bearer"
        assert KEY.encode() not in body
    assert health[0] == 200  # a load balancer's probe needs no key
    assert reply.choices[0].message.content == "The answer is 18."


def test_an_oversized_body_is_refused_with_413_whether_declared_or_chunked():
    big = json.dumps(ask("x" * 1_100_000)).encode()  # over the default 1 MB
    with serving(TWO_STAGE) as served:
        url = f"{served.url}/v1/chat/completions"
        declared = http(url, big)
        # an iterable body goes out with Transfer-Encoding: chunked, no Content-Length to refuse it by
        chunked = http(url, iter([big[i:i + 65536] for i in range(0, len(big), 65536)]))
        still_serving = http(url, ask())[0]
    for status, _, body in (declared, chunked):
        assert "over the limit of 1000000 bytes" in assert_error(status, body, 413, None)["message"]
    assert still_serving == 200


@pytest.mark.parametrize("body, code", [
    (b'{"model": "m", "messages": [', "invalid_json"),
    (b"[1, 2]", "invalid_request"),
    ({"model": "m"}, "invalid_request"),
    ({"model": "m", "messages": []}, "invalid_request"),
    ({**ask(), "n": 2}, "invalid_request"),
    ({**ask(), "max_tokens": 0}, "invalid_request"),
    ({**ask(), "max_tokens": 101}, "max_tokens_too_large"),
    ({**ask(), "max_completion_tokens": 101, "max_tokens": 10}, "max_tokens_too_large"),
    ({"model": "m", "messages": [{"role": "user", "content": "q"}] * 4}, "too_many_messages"),
    ({"model": "m", "messages": [{"role": "system", "content": "be nice"}]}, "no_question"),
    (ask("   "), "no_question"),
    ({"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, "invalid_request"),
    ({"model": "m", "messages": [{"role": "wizard", "content": "q"}]}, "invalid_request"),
    ({**ask(), "divcon": {"passage": "misspelt"}}, "invalid_request"),
])
def test_malformed_requests_get_openai_style_400s(body, code):
    with serving({**TWO_STAGE, "max_tokens": 100, "max_messages": 3}) as served:
        status, _, raw = http(f"{served.url}/v1/chat/completions", body)
    error = assert_error(status, raw, 400, code)
    assert error["type"] == "invalid_request_error"


def test_an_unknown_model_or_path_is_a_404_in_openai_shape():
    with serving(TWO_STAGE) as served:
        raw = http(f"{served.url}/v1/chat/completions", ask(model="gpt-4o"))
        path = http(f"{served.url}/v1/nothing-here")
        with pytest.raises(openai.NotFoundError):
            client(served).chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "q"}])
    error = assert_error(raw[0], raw[2], 404, "model_not_found")
    assert "'gpt-4o'" in error["message"] and "served: m" in error["message"]
    assert_error(path[0], path[2], 404, None)


@pytest.mark.parametrize("how, status, code", [
    ("rejected", 400, "request_rejected"), ("down", 503, "backend_unavailable"), ("bug", 500, "internal_error")])
def test_model_failures_map_to_status_codes_without_internals(how, status, code):
    with serving({"models": {"m": {"mode": "direct", "solver": f"fail:{how}"}}}) as served:
        got, _, body = http(f"{served.url}/v1/chat/completions", ask())
    error = assert_error(got, body, status, code)
    if how == "bug":
        assert error["message"] == "internal server error" and b"internal-detail" not in body
    else:
        assert ("context window" if how == "rejected" else "fake server down") in error["message"]


# concurrency: queue, timeout, shutdown ------------------------------------------------------------------------------

def wait_until(condition, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def busy(served: Served) -> int:
    return json.loads(http(f"{served.url}/health")[2])["busy"]


def in_background(served: Served, results: list, question: str = "How many apples?") -> threading.Thread:
    t = threading.Thread(target=lambda: results.append(
        http(f"{served.url}/v1/chat/completions", ask(question, model="slow"))))
    t.start()
    return t


def test_a_full_queue_is_answered_429_with_retry_after():
    results: list = []
    with serving({**GATED, "concurrency": 1, "queue": 1}) as served:
        running = in_background(served, results)
        assert GateBackend.entered.acquire(timeout=5)  # the one worker is busy
        queued = in_background(served, results, "Another question?")
        wait_until(lambda: busy(served) == 2)
        status, headers, body = http(f"{served.url}/v1/chat/completions", ask(model="slow"))
        GateBackend.gate.set()
        running.join(10)
        queued.join(10)
    assert_error(status, body, 429, "server_busy")
    assert int(headers["retry-after"]) > 0
    assert sorted(r[0] for r in results) == [200, 200]  # the admitted requests were served


def test_a_request_past_its_timeout_gets_504_and_its_pipeline_finishes_in_the_background():
    with serving({**GATED, "timeout": 0.3}) as served:
        status, _, body = http(f"{served.url}/v1/chat/completions", ask(model="slow"))
        assert busy(served) == 1  # still running, still counted against the bound
        GateBackend.gate.set()
        wait_until(lambda: busy(served) == 0)
    assert_error(status, body, 504, "timeout")


def test_shutdown_finishes_the_requests_in_flight():
    results: list = []
    with serving(GATED) as served:
        request = in_background(served, results)
        assert GateBackend.entered.acquire(timeout=5)
        served.server.should_exit = True  # what SIGTERM / Ctrl-C does
        time.sleep(0.3)
        assert request.is_alive()  # the server is waiting for it, not cutting it off
        GateBackend.gate.set()
        request.join(10)
    assert results[0][0] == 200 and json.loads(results[0][2])["choices"][0]["message"]["content"] == "The answer is 7."


# the command ----------------------------------------------------------------------------------------------------------

def divcon(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(cli_app, list(args), env=env)


@pytest.mark.parametrize("host, loopback", [("127.0.0.1", True), ("127.0.0.2", True), ("::1", True),
                                            ("localhost", True), ("0.0.0.0", False), ("::", False),
                                            ("192.168.1.5", False), ("example.com", False)])
def test_is_loopback(host, loopback):
    assert is_loopback(host) is loopback


@pytest.mark.parametrize("env", [{}, {"DIVCON_SERVE_API_KEY": ""}])
def test_binding_beyond_loopback_without_a_key_is_refused(env):
    r = divcon("serve", "--host", "0.0.0.0", env=env)
    assert r.exit_code == 2 and "without an API key" in r.output and "Traceback" not in r.output


def test_a_bad_config_is_one_line_and_exit_2(tmp_path):
    path = tmp_path / "serve.yaml"
    path.write_text("models:\n  m: {solver: 'fake:x', mode: single-stage}\n")
    r = divcon("serve", "--config", str(path))
    assert r.exit_code == 2 and "unknown mode 'single-stage'" in r.output and len(r.output.strip().splitlines()) == 1
    assert divcon("serve", "--config", str(tmp_path / "missing.yaml")).exit_code == 2


def test_check_asks_a_running_server_with_the_key_from_the_environment():
    with serving(TWO_STAGE, api_key=KEY) as served:
        ok = divcon("serve", "--check", served.url, env={"DIVCON_SERVE_API_KEY": KEY})
        wrong = divcon("serve", "--check", served.url, env={"DIVCON_SERVE_API_KEY": "nope"})
    assert ok.exit_code == 0, ok.output
    assert "models: m" in ok.output and "answer: The answer is 18." in ok.output
    assert wrong.exit_code == 2 and "401" in wrong.output


# the served-model table -----------------------------------------------------------------------------------------------

def test_the_default_table_serves_the_teacher_under_one_name_per_family():
    cfg = parse_config(None)
    assert {n: (m.family, m.decomposer, m.solver, m.pipeline.mode) for n, m in cfg.models.items()} == {
        "divcon": ("openqa", TEACHER, TEACHER, "two-stage"), "divcon-math": ("math", TEACHER, TEACHER, "two-stage"),
        "divcon-reading": ("reading", TEACHER, TEACHER, "two-stage")}
    assert cfg.specs == [TEACHER] and cfg.max_body_bytes == 1_000_000


def test_pipeline_settings_map_onto_the_pipeline_config():
    cfg = parse_config({"queue": 0, "models": {
        "student": {"decomposer": "fake:s", "solver": "fake:t", "pipeline": {"decompose_shots": 0, "shots": 2}},
        "single": {"mode": "cot", "solver": "fake:t"}}})
    student, single = cfg.models["student"], cfg.models["single"]
    assert (student.pipeline.decompose_shots, student.pipeline.shots, student.decomposer) == (0, 2, "fake:s")
    assert single.decomposer is None and cfg.specs == ["fake:s", "fake:t"] and cfg.queue == 0


@pytest.mark.parametrize("data, message", [
    ({"port": 1}, "unknown keys ['port']"),
    ({"models": {}}, "non-empty mapping"),
    ({"models": {"m": {"solver": "x", "temperature": 0}}}, "unknown keys ['temperature']"),
    ({"models": {"m": {"mode": "single"}}}, "unknown mode 'single'"),
    ({"models": {"m": {"family": "poetry"}}}, "unknown family 'poetry'"),
    ({"models": {"m": {"pipeline": {"solve_tokenz": 9}}}}, "pipeline must be a mapping"),
    ({"models": {"m": {"pipeline": {"solve_style": "loud"}}}}, "unknown solve_style 'loud'"),
    ({"models": {"m": {"mode": "direct", "decomposer": "x"}}}, "mode direct has no decomposer"),
    ({"models": {"m": {"decomposer": None}}}, "decomposer must be a model spec, got None"),
    ({"models": {"m": {"mode": "cot", "solver": ""}}}, "solver must be a model spec"),
    ({"queue": -1}, "queue must be"),
    ({"concurrency": 0}, "concurrency must be"),
    ({"max_tokens": True}, "max_tokens must be"),
    ({"timeout": "soon"}, "timeout must be"),
    ([1], "a serve config is a mapping"),
])
def test_config_mistakes_are_named(data, message):
    with pytest.raises(ValueError) as e:
        parse_config(data)
    assert message in str(e.value)
