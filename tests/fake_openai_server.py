"""A tiny OpenAI-compatible server on 127.0.0.1 for tests: real HTTP through the real ``openai`` client, so retrying,
outages and error mapping are tested end to end without network access or a model.

``FakeOpenAIServer().start()`` answers ``POST /v1/chat/completions`` with a valid ``chat.completion``. Queue
``(status, body, headers)`` entries in ``script`` to answer the next requests with errors (or any other body) instead;
``stop()`` and ``start()`` again kill and restart it on the same port, like a server restart. ``delay`` holds every
chat request that long before answering, and ``in_flight`` / ``max_in_flight`` count the chat requests being served at
once (``reset_counts()`` starts a new measurement); with ``echo`` each OK answer's text is the request's last message.

A request with ``"stream": true`` whose answer is a ``chat.completion`` gets it as server-sent ``chat.completion.chunk``
events over chunked HTTP, as real servers send them: the role, one chunk per word, the finish reason, and a usage chunk
when the request asks for it (``stream_options.include_usage``) and ``stream_usage`` is on. ``stream_pause`` seconds
pass between chunks; ``stream_hold``, an event, is waited on (up to 5 s) after the first word, and ``held`` says
whether it was set in time (a client that hands out words as they arrive can set it from its callback);
``stream_break = (n, "reset" | "error")`` breaks the next stream after ``n`` words, by cutting the connection or with
an ``{"error": ...}`` event.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def free_port() -> int:
    """A port nothing listens on (bound then released), so connecting to it is refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def completion(model: str, text: str = "hello") -> dict:
    return {
        "id": "chatcmpl-fake", "object": "chat.completion", "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
    }


def error_body(message: str, type_: str = "invalid_request_error") -> dict:
    return {"error": {"message": message, "type": type_, "param": None, "code": None}}


class FakeOpenAIServer:
    """Counts every request it sees (``requests``, across restarts) and replays ``script`` before answering OK."""

    def __init__(self, port: int | None = None, delay: float = 0.0, echo: bool = False):
        self.port = port or free_port()
        self.script: list[tuple[int, dict, dict[str, str]]] = []
        self.requests: list[dict] = []
        self.delay = delay  # seconds each chat request is held before its answer is sent
        self.echo = echo  # answer with the last message's content instead of "hello"
        self.in_flight = 0  # chat requests being served right now
        self.max_in_flight = 0  # the most served at once since start or reset_counts()
        self.stream_pause = 0.0  # seconds between the chunks of a streamed answer
        self.stream_usage = True  # send the usage chunk when the request asks for it
        self.stream_hold: threading.Event | None = None  # waited on after a stream's first word
        self.held: bool | None = None  # whether stream_hold was set within 5 s
        self.stream_break: tuple[int, str] | None = None  # (after n words, "reset" | "error")
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None

    def reset_counts(self) -> None:
        with self._lock:
            self.requests.clear()
            self.max_in_flight = self.in_flight

    def _enter(self) -> None:
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def _leave(self) -> None:
        with self._lock:
            self.in_flight -= 1

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def _next(self, body: dict) -> tuple[int, dict, dict[str, str]]:
        with self._lock:
            self.requests.append(body)
            if self.script:
                return self.script.pop(0)
        messages = body.get("messages") or [{}]
        text = str(messages[-1].get("content", "")) if self.echo else "hello"
        return 200, completion(body.get("model", "fake"), text), {}

    def start(self) -> "FakeOpenAIServer":
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.path.rstrip("/") != "/v1/chat/completions":
                    self.answer(404, error_body(f"no route {self.path}"), {})
                    return
                request = json.loads(raw or b"{}")
                # counted out before the answer is written: once the client has it, the request is no longer here
                server._enter()
                left = False
                try:
                    status, body, headers = server._next(request)
                    if server.delay > 0:
                        time.sleep(server.delay)
                    if status == 200 and request.get("stream") and body.get("object") == "chat.completion":
                        include_usage = bool((request.get("stream_options") or {}).get("include_usage"))
                        left = True
                        self.stream(body, include_usage)
                        return
                finally:
                    if not left:
                        server._leave()
                self.answer(status, body, headers)

            def answer(self, status: int, body: dict, headers: dict[str, str]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def stream(self, body: dict, include_usage: bool) -> None:
                """The answer as SSE chunks; counted out before ``[DONE]`` (the client is done only after it)."""
                choice = body["choices"][0]
                head = {"id": body["id"], "object": "chat.completion.chunk", "created": body["created"],
                        "model": body["model"]}

                def chunk(delta: dict, finish: str | None = None) -> dict:
                    return {**head, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

                def send(data: bytes) -> None:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                    self.wfile.flush()

                def event(data: dict | str) -> None:
                    send(f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n".encode())

                self.protocol_version = "HTTP/1.1"  # chunked transfer, so a cut stream is an error, not an end
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Transfer-Encoding", "chunked")
                self.send_header("Connection", "close")
                self.end_headers()
                try:
                    event(chunk({"role": "assistant", "content": ""}))
                    words = re.findall(r"\s*\S+\s*", choice["message"]["content"] or "")
                    for i, word in enumerate(words):
                        if server.stream_break and i == server.stream_break[0]:
                            how, server.stream_break = server.stream_break[1], None  # once: a retry goes through
                            if how == "error":
                                event(error_body("the model crashed", "server_error"))
                            else:
                                self.wfile.write(b"100\r\ndata: {")  # a chunk promised, never finished
                            return
                        event(chunk({"content": word}))
                        if i == 0 and server.stream_hold is not None:
                            server.held = server.stream_hold.wait(5)
                        time.sleep(server.stream_pause)
                    event(chunk({}, choice["finish_reason"]))
                    if include_usage and server.stream_usage:
                        extra = {k: v for k, v in body.items() if k not in (*head, "choices", "usage")}
                        event({**head, "choices": [], "usage": body.get("usage"), **extra})
                finally:
                    server._leave()
                event("[DONE]")
                send(b"")

            def log_message(self, *args) -> None:  # keep test output clean
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._httpd.daemon_threads = True
        threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def restart_after(self, seconds: float) -> threading.Timer:
        """Start again on the same port after ``seconds`` (call ``stop()`` first): an outage of known length."""
        timer = threading.Timer(seconds, self.start)
        timer.daemon = True
        timer.start()
        return timer

    def __enter__(self) -> "FakeOpenAIServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
