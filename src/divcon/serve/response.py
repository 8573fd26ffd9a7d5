"""What a client gets back: a normal ``chat.completion`` whose message is the solver's final output, and divcon's
extras under ``"divcon"``: the answer pulled out of it, the subquestions, and tokens, dollars and seconds per stage
and per model. ``usage`` counts every token of every stage and model, so an application's own accounting sees what
the answer really cost. Dollars are null for a model with no price (never a made-up $0), and so is any total that
includes one.

Streaming is honest about what it is: divcon's backends do not stream tokens, so the whole pipeline runs first and
its final text is then sent as a series of well-formed ``chat.completion.chunk`` events (one per word), the last
carrying ``finish_reason``, ``usage`` and the extras, then ``data: [DONE]``. A client's streaming code works; the
first word arrives when the answer is complete.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict
from typing import Iterator

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


def chunks(body: dict) -> Iterator[str]:
    """A finished completion as server-sent events in OpenAI's chunk format; the deltas concatenate to its text."""
    head = {"id": body["id"], "object": "chat.completion.chunk", "created": body["created"], "model": body["model"]}
    choice = body["choices"][0]

    def chunk(delta: dict, finish_reason: str | None = None) -> dict:
        return {**head, "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]}

    yield _event(chunk({"role": "assistant", "content": ""}))
    for word in re.split(r"(?<=\s)(?=\S)", choice["message"]["content"]):
        if word:
            yield _event(chunk({"content": word}))
    yield _event({**chunk({}, choice["finish_reason"]), "usage": body["usage"], "divcon": body["divcon"]})
    yield _event("[DONE]")
