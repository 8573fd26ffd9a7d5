"""What a client gets back: a normal ``chat.completion`` whose message is the solver's final output, and divcon's
extras under ``"divcon"``: the answer pulled out of it, the subquestions, and tokens, dollars and seconds per stage
and per model. ``usage`` counts every token of every stage and model, so an application's own accounting sees what
the answer really cost. Dollars are null for a model with no price (never a made-up $0), and so is any total that
includes one.

Streaming (``stream: true``) sends the solver's answer as it is generated: the pipeline runs as usual (same
admission, timeout and calls), and the one generation that writes the final output (see
:mod:`divcon.pipeline.pipelines`) streams its tokens into ``chat.completion.chunk`` events: first the role, then
the text pieces as the model produces them, then one chunk carrying ``finish_reason``, ``usage`` and the extras, then
``data: [DONE]``. So the first word arrives once the decomposition is done and the solver starts writing. A backend
that cannot stream, and an answer replayed from the call log, arrive as one piece. The pieces concatenate to exactly
the non-streamed message (:class:`Trim`). Nothing is sent before the first piece of text, so a request refused,
failing or timing out before it gets the same status code as a non-streamed one; a failure after it (the timeout still
bounds the whole request) is sent as an OpenAI error event (``data: {"error": {...}}``, which the ``openai`` client
raises as ``APIError``), then ``data: [DONE]``.
"""

from __future__ import annotations

import json
from dataclasses import asdict

from divcon.cost import Price, price_of
from divcon.pipeline import PipelineResult
from divcon.tasks.answers import extract_math, extract_text


class Prices:
    """Each model's price, looked up once per model (a local model's price resolves its weights)."""

    def __init__(self, table: dict):
        self.table = table
        self._known: dict[str, Price] = {}

    def dollars(self, model: str, tokens_in: int, tokens_out: int) -> float | None:
        if model not in self._known:
            self._known[model] = price_of(model, self.table)
        price = self._known[model]
        return None if price.source == "unpriced" else price.dollars(tokens_in, tokens_out)


def _total(dollars: list[float | None]) -> float | None:
    return None if None in dollars else sum(dollars)  # type: ignore[arg-type]


def extras(result: PipelineResult, family: str, seconds: float, prices: Prices) -> dict:
    answer, _ = (extract_math if family == "math" else extract_text)(result.final_output)
    stages = [{**asdict(u), "dollars": prices.dollars(u.model, u.tokens_in, u.tokens_out)} for u in result.usage]
    models: dict[str, dict] = {}
    for u in result.usage:
        m = models.setdefault(u.model, {"tokens_in": 0, "tokens_out": 0, "seconds": 0.0, "calls": 0})
        for key in m:
            m[key] += getattr(u, key)
    for model, m in models.items():
        m["dollars"] = prices.dollars(model, m["tokens_in"], m["tokens_out"])
    return {"mode": result.mode, "family": family, "answer": answer, "subquestions": result.subquestions,
            "stages": stages, "models": models,
            "tokens_in": sum(u.tokens_in for u in result.usage), "tokens_out": sum(u.tokens_out for u in result.usage),
            "dollars": _total([m["dollars"] for m in models.values()]), "seconds": seconds,
            "truncated": result.truncated}


def completion(request_id: str, created: int, model: str, result: PipelineResult, divcon: dict) -> dict:
    """The chat completion. ``finish_reason`` is "length" when any generation of the pipeline hit its token limit
    (a cut decomposition can change the answer as much as a cut solution)."""
    return {
        "id": request_id, "object": "chat.completion", "created": created, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": result.final_output.strip()},
                     "finish_reason": "length" if result.truncated else "stop"}],
        "usage": {"prompt_tokens": divcon["tokens_in"], "completion_tokens": divcon["tokens_out"],
                  "total_tokens": divcon["tokens_in"] + divcon["tokens_out"]},
        "divcon": divcon,
    }


def _event(data: dict | str) -> str:
    return f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n"


class Trim:
    """Passes on a model's text pieces so that they concatenate to ``text.strip()``, which is what the non-streamed
    message holds: whitespace before the first visible character is dropped, and whitespace is held back until
    visible text follows it, so whitespace at the end is never sent. ``sent`` is everything passed on so far."""

    def __init__(self) -> None:
        self.sent = ""
        self._held = ""

    def feed(self, piece: str) -> str:
        if not self.sent:
            piece = piece.lstrip()
        body = piece.rstrip()
        if not body:
            self._held += piece
            return ""
        out, self._held = self._held + body, piece[len(body):]
        self.sent += out
        return out


class Chunks:
    """The server-sent events of one streamed completion, in OpenAI's ``chat.completion.chunk`` format."""

    def __init__(self, request_id: str, created: int, model: str):
        self.head = {"id": request_id, "object": "chat.completion.chunk", "created": created, "model": model}

    def _chunk(self, delta: dict, finish_reason: str | None = None) -> dict:
        return {**self.head, "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]}

    def start(self) -> str:
        return _event(self._chunk({"role": "assistant", "content": ""}))

    def text(self, piece: str) -> str:
        return _event(self._chunk({"content": piece}))

    def end(self, reply: dict) -> str:
        """The last chunk (finish reason, usage, extras of the finished ``completion``) and the end of the stream."""
        last = {**self._chunk({}, reply["choices"][0]["finish_reason"]), "usage": reply["usage"],
                "divcon": reply["divcon"]}
        return _event(last) + _event("[DONE]")

    def error(self, body: dict) -> str:
        """A failure after the stream began (an ``errors.error_body``), and the end of the stream."""
        return _event(body) + _event("[DONE]")
