"""Streaming below the server: the openai backend hands out text as a loopback fake server sends it (and gives the same
generation, usage and call-log entry as without streaming), a stream that breaks is retried only while nothing has been
handed out, and each pipeline mode streams exactly the one generation that becomes its final output."""

from __future__ import annotations

import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from divcon.backends import CallLog, default_log, load_backend, register_backend, stream_one
from divcon.backends.base import BackendUnavailable, ChatRequest, Generation, ModelSpec
from divcon.backends.openai_backend import OpenAIBackend
from divcon.pipeline import Pipeline, PipelineConfig
from divcon.pipeline import prompts as P
from divcon.tasks.base import Example
from tests.fake_openai_server import FakeOpenAIServer, completion
from tests.fakes import ScriptedBackend, is_decompose_prompt

pytestmark = pytest.mark.usefixtures("hermetic_openai_env")

REQ = ChatRequest.of([{"role": "user", "content": "How many apples?"}], max_tokens=32)
TEXT = "The answer is 18."


@pytest.fixture
def server():
    srv = FakeOpenAIServer().start()
    yield srv
    srv.stop()


def answer(text: str = TEXT, prompt_tokens: int = 11, completion_tokens: int = 5, **extra) -> dict:
    body = completion("fake", text) | extra
    body["usage"] = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                     "total_tokens": prompt_tokens + completion_tokens}
    return body


def backend(base_url: str, **options: str) -> OpenAIBackend:
    opts = "".join(f",{k}={v}" for k, v in {"base_url": base_url, **options}.items())
    return OpenAIBackend(ModelSpec.parse(f"openai:fake{opts}"))


# the openai backend ---------------------------------------------------------------------------------------------------

def test_stream_hands_out_each_piece_as_it_arrives_and_logs_the_call(server):
    server.script.append((200, answer(), {}))
    server.stream_hold = threading.Event()  # the server waits after the first word until our callback has it
    pieces: list[str] = []

    def on_text(text: str) -> None:
        pieces.append(text)
        server.stream_hold.set()

    model = load_backend(f"openai:fake,base_url={server.base_url}")
    gen = model.stream(REQ, on_text)
    assert server.held is True  # the first word reached us while the server still held the rest
    assert pieces == ["The ", "answer ", "is ", "18."] and "".join(pieces) == gen.text == TEXT
    assert (gen.tokens_in, gen.tokens_out, gen.finish_reason, gen.cached) == (11, 5, "stop", False)
    assert server.requests[0]["stream"] is True and server.requests[0]["stream_options"] == {"include_usage": True}
    assert default_log().count(model.spec) == 1  # logged when it completed

    again: list[str] = []
    replay = model.stream(REQ, again.append)  # an identical request: from the log, as one piece, no server call
    plain = model.generate([REQ])[0]  # the same key as a non-streamed request
    assert len(server.requests) == 1 and again == [TEXT]
    for g in (replay, plain):
        assert g.cached and (g.text, g.tokens_in, g.tokens_out, g.finish_reason) == (TEXT, 11, 5, "stop")


def test_a_logged_non_streamed_answer_serves_a_streamed_request(server):
    server.script.append((200, answer(), {}))
    model = load_backend(f"openai:fake,base_url={server.base_url}")
    first = model.generate([REQ])[0]
    pieces: list[str] = []
    again = model.stream(REQ, pieces.append)
    assert len(server.requests) == 1 and pieces == [TEXT] and again.cached and again.text == first.text


def test_stream_gives_what_generate_gives(server):
    body = answer("Fourteen plus four is eighteen, so", 40, 8, timings={"cache_n": 33})
    body["choices"][0]["finish_reason"] = "length"
    server.script += [(200, body, {}), (200, body, {})]
    be = backend(server.base_url)
    plain = be.generate([REQ])[0]
    streamed = be.stream(REQ, lambda _: None)
    for field in ("text", "tokens_in", "tokens_out", "model", "cached", "finish_reason", "cached_tokens"):
        assert getattr(streamed, field) == getattr(plain, field), field
    assert (streamed.finish_reason, streamed.cached_tokens) == ("length", 33)


def test_a_server_that_sends_no_usage_counts_no_tokens(server):
    server.stream_usage = False
    server.script.append((200, answer(), {}))
    gen = backend(server.base_url).stream(REQ, lambda _: None)
    assert (gen.text, gen.tokens_in, gen.tokens_out) == (TEXT, 0, 0)


def test_a_stream_cut_before_any_text_is_retried(server):
    server.stream_break = (0, "reset")  # the first attempt is cut before its first word; the retry goes through
    pieces: list[str] = []
    gen = backend(server.base_url, outage="5").stream(REQ, pieces.append)
    assert len(server.requests) == 2 and "".join(pieces) == gen.text == "hello"


@pytest.mark.parametrize("how, says", [("reset", "broke off the stream after 11 characters"),
                                       ("error", "the model crashed")])
def test_a_stream_broken_after_text_fails_at_once_and_is_not_logged(server, how, says):
    server.script.append((200, answer(), {}))
    server.stream_break = (2, how)
    model = load_backend(f"openai:fake,base_url={server.base_url},outage=5")
    pieces: list[str] = []
    t0 = time.monotonic()
    with pytest.raises(BackendUnavailable, match=says) as info:
        model.stream(REQ, pieces.append)
    assert time.monotonic() - t0 < 2  # not retried: a retry would hand out "The answer " twice
    assert pieces == ["The ", "answer "] and len(server.requests) == 1
    assert server.base_url in str(info.value) and "\n" not in str(info.value)
    assert default_log().count() == 0


def test_streams_share_the_concurrency_bound(server):
    server.echo = True
    server.stream_pause = 0.05
    be = backend(server.base_url, concurrency="2")
    reqs = [ChatRequest.of([{"role": "user", "content": f"one two three four {i}"}]) for i in range(6)]
    with ThreadPoolExecutor(6) as pool:
        gens = list(pool.map(lambda r: be.stream(r, lambda _: None), reqs))
    assert [g.text for g in gens] == [r.messages[-1][1] for r in reqs]
    assert server.max_in_flight == 2  # a stream holds its slot until it has been read to the end


def test_a_backend_without_stream_hands_out_its_whole_text_once():
    pieces: list[str] = []
    gen = stream_one(ScriptedBackend(ModelSpec.parse("fake:x")), REQ, pieces.append)
    assert pieces == [gen.text] == ["The answer is 18."]


def test_the_llamacpp_engines_stream_as_their_own_model(server, monkeypatch):
    """engine=server streams through its server's client, labelled as the llamacpp model; engine=inproc hands its
    answer over whole. No model is loaded: the server is the fake, the in-process decode a stub."""
    import divcon.backends.llamacpp as L

    llama = object.__new__(L.LlamaCppBackend)
    llama.spec, llama.engine, llama._client_lock = "llamacpp:tiny", "server", threading.Lock()
    llama._client = backend(server.base_url)
    server.script.append((200, answer(), {}))
    pieces: list[str] = []
    gen = llama.stream(REQ, pieces.append)
    assert (gen.model, gen.text, len(pieces)) == ("llamacpp:tiny", TEXT, 4)
    llama.engine = "inproc"
    monkeypatch.setattr(llama, "_inproc", lambda req: Generation(TEXT, 1, 1, 0.0, "llamacpp:tiny"), raising=False)
    pieces.clear()
    assert llama.stream(REQ, pieces.append).text == TEXT and pieces == [TEXT]


# the pipelines --------------------------------------------------------------------------------------------------------

class StreamingScripted(ScriptedBackend):
    """``sfake:<route>``: the scripted answers (``<route>`` to a routing prompt), and a ``stream`` that hands out the
    answer word by word; ``streamed`` records the kind of every streamed prompt."""

    streamed: list[str] = []

    def __init__(self, spec: ModelSpec):
        super().__init__(spec, solve=" The answer is 18.\n")
        self.route = spec.name

    def generate(self, requests: list[ChatRequest]) -> list[Generation]:
        routed = [r for r in requests if r.messages[0][1] == P.route_messages("q", None, "math")[0]["content"]]
        if routed:
            return [Generation(self.route, 30, 1, 0.01, self.spec) for _ in requests]
        return super().generate(requests)

    def stream(self, request: ChatRequest, on_text) -> Generation:
        gen = self.generate([request])[0]
        StreamingScripted.streamed.append("decompose" if is_decompose_prompt(request) else "solve")
        for word in re.findall(r"\s*\S+\s*", gen.text):
            on_text(word)
        return gen


@pytest.mark.parametrize("mode, route", [("direct", "-"), ("cot", "-"), ("two-stage", "-"), ("dynamic", "-"),
                                         ("auto", "direct"), ("auto", "decompose")])
def test_each_mode_streams_only_its_final_generation_with_the_same_result(tmp_path, mode, route):
    register_backend("sfake", StreamingScripted)
    StreamingScripted.streamed = []
    ex = Example("q", "How many apples?", ["18"])

    def pipe(log: str) -> Pipeline:
        model = load_backend(f"sfake:{route}", CallLog(tmp_path / log))
        return Pipeline(PipelineConfig(mode=mode, max_rounds=3), solver=model, decomposer=model)

    plain = pipe("plain.sqlite").run_one(ex, "math")
    assert StreamingScripted.streamed == []  # no on_text: nothing streams
    pieces: list[str] = []
    streamed = pipe("streamed.sqlite").run_one(ex, "math", on_text=pieces.append)
    assert StreamingScripted.streamed == ["solve"]  # one streamed call: the one that writes the final output
    assert "".join(pieces) == streamed.final_output == " The answer is 18.\n"
    assert streamed.to_dict() == plain.to_dict()
