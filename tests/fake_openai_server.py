"""A tiny OpenAI-compatible server on 127.0.0.1 for tests: real HTTP through the real ``openai`` client, so retrying,
outages and error mapping are tested end to end without network access or a model.

``FakeOpenAIServer().start()`` answers ``POST /v1/chat/completions`` with a valid ``chat.completion``. Queue
``(status, body, headers)`` entries in ``script`` to answer the next requests with errors (or any other body) instead;
``stop()`` and ``start()`` again kill and restart it on the same port, like a server restart. ``delay`` holds every
chat request that long before answering, and ``in_flight`` / ``max_in_flight`` count the chat requests being served at
once (``reset_counts()`` starts a new measurement); with ``echo`` each OK answer's text is the request's last message.
"""

from __future__ import annotations

import json
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
                    status, body, headers = 404, error_body(f"no route {self.path}"), {}
                else:
                    # counted out before the answer is written: once the client has it, the request is no longer here
                    server._enter()
                    try:
                        status, body, headers = server._next(json.loads(raw or b"{}"))
                        if server.delay > 0:
                            time.sleep(server.delay)
                    finally:
                        server._leave()
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

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
