"""The openai backend against a loopback fake server: outages are ridden through within the budget, then reported in
one line naming the server; rejected requests and configuration errors fail at once without retrying."""

from __future__ import annotations

import socket
import time

import pytest

from divcon.backends.base import ChatRequest, ModelSpec
from divcon.backends.openai_backend import BackendUnavailable, OpenAIBackend, RequestRejected
from tests.fake_openai_server import FakeOpenAIServer, error_body, free_port

REQ = ChatRequest.of([{"role": "user", "content": "hi"}], max_tokens=5)


pytestmark = pytest.mark.usefixtures("hermetic_openai_env")


@pytest.fixture
def server():
    srv = FakeOpenAIServer().start()
    yield srv
    srv.stop()


def backend(base_url: str, **options: str) -> OpenAIBackend:
    opts = "".join(f",{k}={v}" for k, v in {"base_url": base_url, **options}.items())
    return OpenAIBackend(ModelSpec.parse(f"openai:fake{opts}"))


def test_server_down_from_start_gives_one_line_error_within_budget():
    url = f"http://127.0.0.1:{free_port()}/v1"
    t0 = time.monotonic()
    with pytest.raises(BackendUnavailable) as info:
        backend(url, outage="1").generate([REQ])
    elapsed = time.monotonic() - t0
    msg = str(info.value)
    assert 1.0 <= elapsed < 4.0
    assert url in msg and "outage budget 1 s" in msg and "unreachable" in msg
    assert "\n" not in msg
    assert info.value.__cause__ is not None


def test_hung_server_times_out_and_is_reported():
    """A server that accepts connections but never answers: each try ends at ``timeout``, the budget still holds."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)  # never accept: the kernel completes the handshake, nobody answers
        url = f"http://127.0.0.1:{s.getsockname()[1]}/v1"
        t0 = time.monotonic()
        with pytest.raises(BackendUnavailable, match="timed out") as info:
            backend(url, outage="1", timeout="0.3").generate([REQ])
        assert time.monotonic() - t0 < 3.0
        assert url in str(info.value)


def test_outage_zero_fails_at_once():
    t0 = time.monotonic()
    with pytest.raises(BackendUnavailable, match="outage budget 0 s"):
        backend(f"http://127.0.0.1:{free_port()}/v1", outage="0").generate([REQ])
    assert time.monotonic() - t0 < 1.0


def test_rides_through_server_restart(server):
    be = backend(server.base_url, outage="5")
    assert be.generate([REQ])[0].text == "hello"
    server.stop()
    timer = server.restart_after(1.5)
    try:
        t0 = time.monotonic()
        gens = be.generate([REQ, REQ, REQ])
        assert time.monotonic() - t0 >= 1.4
    finally:
        timer.cancel()
    assert [g.text for g in gens] == ["hello"] * 3
    assert gens[0].tokens_in == 3 and gens[0].tokens_out == 1


def test_bad_request_is_rejected_without_retry(server):
    server.script.append((400, error_body("This model's maximum context length is 4096 tokens"), {}))
    with pytest.raises(RequestRejected) as info:
        backend(server.base_url, outage="5").generate([REQ])
    msg = str(info.value)
    assert "maximum context length is 4096 tokens" in msg and "openai:fake" in msg and "\n" not in msg
    assert len(server.requests) == 1


@pytest.mark.parametrize("status", [401, 404])
def test_configuration_errors_fail_at_once(server, status):
    server.script.append((status, error_body("Incorrect API key provided"), {}))
    with pytest.raises(BackendUnavailable) as info:
        backend(server.base_url, outage="5").generate([REQ])
    assert f"HTTP {status}" in str(info.value) and "Incorrect API key" in str(info.value)
    assert server.base_url in str(info.value)
    assert len(server.requests) == 1


def test_server_errors_are_retried(server):
    server.script += [(500, error_body("boom", "server_error"), {})] * 2
    gens = backend(server.base_url, outage="5").generate([REQ])
    assert gens[0].text == "hello"
    assert len(server.requests) == 3


def test_rate_limit_honours_retry_after(server):
    server.script.append((429, error_body("slow down", "rate_limit"), {"Retry-After": "1"}))
    t0 = time.monotonic()
    assert backend(server.base_url, outage="5").generate([REQ])[0].text == "hello"
    assert time.monotonic() - t0 >= 0.9
    assert len(server.requests) == 2


def test_persistent_server_errors_exhaust_budget(server):
    server.script += [(503, error_body("model loading", "server_error"), {})] * 100
    with pytest.raises(BackendUnavailable) as info:
        backend(server.base_url, outage="1").generate([REQ])
    msg = str(info.value)
    assert "HTTP 503" in msg and "model loading" in msg and server.base_url in msg and "\n" not in msg


@pytest.mark.parametrize("option,value", [("outage", "abc"), ("outage", "-1"), ("concurrency", "0"),
                                          ("concurrency", "2.5"), ("timeout", "0"), ("timeout", "x")])
def test_bad_option_values_name_the_option(option, value):
    with pytest.raises(ValueError, match=rf"option {option}="):
        backend("http://127.0.0.1:9/v1", **{option: value})


def test_options_are_declared():
    assert set(OpenAIBackend.OPTIONS) == {"base_url", "concurrency", "timeout", "outage"}
    assert all(isinstance(h, str) and h and "\n" not in h for h in OpenAIBackend.OPTIONS.values())


def test_default_base_url_is_named(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    be = OpenAIBackend(ModelSpec.parse("openai:gpt-4o-mini"))
    assert be.base_url == "https://api.openai.com/v1" and be.outage == 180
