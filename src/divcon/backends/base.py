"""The one interface every model backend implements: a batch of chat requests in, texts plus usage out.

Keeping the interface this small is what lets the call log, the cache and the cost accounting wrap any backend
(local GGUF, OpenAI-compatible server, fine-tuned HF student) without knowing which one it is.

Streaming is an optional extra (:class:`Streaming`): a backend that can hand out its text while it is generated (the
OpenAI-compatible client, and so the embedded llama-server engine) has a ``stream`` method; a caller that wants the
text early asks through :func:`stream_one`, which falls back to ``generate`` and hands over the whole text at once for
every other backend. Either way the caller gets the same :class:`Generation`, so results and costs never depend on
whether anyone watched the text arrive.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Callable, Protocol, runtime_checkable

OnText = Callable[[str], None]  # receives each piece of generated text as it arrives


@dataclass(frozen=True)
class ChatRequest:
    """One chat completion request. ``messages`` are OpenAI-style {role, content} dicts."""

    messages: tuple[tuple[str, str], ...]
    max_tokens: int = 512
    temperature: float = 0.0
    stop: tuple[str, ...] = ()
    seed: int = 0

    @classmethod
    def of(cls, messages: list[dict[str, str]], **params) -> "ChatRequest":
        msgs = tuple((m["role"], m["content"]) for m in messages)
        if "stop" in params and params["stop"] is not None:
            params["stop"] = tuple(params["stop"])
        return cls(messages=msgs, **params)

    def message_dicts(self) -> list[dict[str, str]]:
        return [{"role": r, "content": c} for r, c in self.messages]

    def params(self) -> dict:
        """Sampling parameters that change the output; part of the cache key."""
        return {"max_tokens": self.max_tokens, "temperature": self.temperature, "stop": list(self.stop),
                "seed": self.seed}

    def prompt_json(self) -> str:
        return json.dumps(self.message_dicts(), ensure_ascii=False)


@dataclass
class Generation:
    """A model's answer to one request, with the usage that cost accounting needs."""

    text: str
    tokens_in: int
    tokens_out: int
    seconds: float
    model: str
    cached: bool = False
    finish_reason: str = "stop"
    cached_tokens: int = 0  # prompt tokens the server reused from its own prompt cache (0 = none or not reported)


class RequestRejected(ValueError):
    """This one request cannot be served (its prompt exceeds the context window, the server refuses it). Retrying
    gives the same answer, so the runner records the example as an error and goes on with the others."""


class BackendUnavailable(RuntimeError):
    """The model cannot be used at all (a server down past its outage budget, a wrong key, an unknown model name).
    The run stops with one line saying why; every record written so far is kept."""


class Backend(Protocol):
    """A model behind a spec string such as ``llamacpp:qwen2.5-1.5b``. A backend class also declares the spec
    options it accepts as ``OPTIONS: dict[str, str]`` (name -> help); any other option is refused."""

    spec: str

    def generate(self, requests: list[ChatRequest]) -> list[Generation]:
        """Answer each request, in order. Implementations may batch or parallelise."""
        ...


@runtime_checkable
class Streaming(Protocol):
    """A backend that can stream one request's text. Optional: backends that cannot (in-process models, test fakes)
    just lack the method, and :func:`stream_one` serves them through ``generate``."""

    def stream(self, request: ChatRequest, on_text: OnText) -> Generation:
        """Answer one request, passing each new piece of its text to ``on_text`` as it arrives (from the calling
        thread; the pieces concatenate to the returned text), and return what ``generate([request])[0]`` would: the
        same text, usage, finish reason, error semantics."""
        ...


def hand_over(gen: Generation, on_text: OnText) -> Generation:
    """A finished generation, its text passed to ``on_text`` as one piece: how a stream looks from a backend that
    cannot stream, or from an answer replayed from the call log."""
    if gen.text:
        on_text(gen.text)
    return gen


def stream_one(backend: Backend, request: ChatRequest, on_text: OnText) -> Generation:
    """One request, its text streamed to ``on_text``: token by token where the backend can stream, else as one piece
    when the whole generation is done."""
    if isinstance(backend, Streaming):
        return backend.stream(request, on_text)
    return hand_over(backend.generate([request])[0], on_text)


RUN_OPTIONS = frozenset({"engine", "slots", "threads", "concurrency", "timeout", "outage"})  # how, not which


def accounting_name(spec: str) -> str:
    """The name a model's usage is recorded, priced and summed under: its canonical spec without the options that
    only say how it is run (engine, slots, threads, client concurrency and timeouts). Without this the teacher
    served with ``slots=16`` would count as another model than the same teacher with 8: its tokens would leave the
    big model's column of a report."""
    if not spec or not spec.strip():
        return spec
    parsed = ModelSpec.parse(spec)
    return str(ModelSpec(parsed.kind, parsed.name, {k: v for k, v in parsed.options.items() if k not in RUN_OPTIONS}))


@dataclass
class ModelSpec:
    """A parsed model spec: ``kind:name`` plus ``,key=value`` options (e.g. ``hf:/dir,adapter=/lora``)."""

    kind: str
    name: str
    options: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, spec: str) -> "ModelSpec":
        if not spec or not spec.strip():
            raise ValueError("empty model spec; expected e.g. 'llamacpp:qwen2.5-1.5b', 'openai:gpt-4o-mini', "
                             "'hf:/path'")
        spec = spec.strip()
        kind, sep, rest = spec.partition(":")
        if not sep:  # a bare alias means the embedded llama.cpp backend
            kind, rest = "llamacpp", spec
        parts = rest.split(",")
        options = {}
        for p in parts[1:]:
            k, eq, v = p.partition("=")
            if not eq:
                raise ValueError(f"bad option {p!r} in model spec {spec!r}; options look like key=value")
            options[k.strip()] = v.strip()
        return cls(kind=kind.strip(), name=parts[0].strip(), options=options)

    def number(self, name: str, default: float, cast: Callable[[str], float], valid: Callable[[float], bool],
               need: str) -> float:
        """A numeric option, or ``default``; a typo must fail when the backend is built, naming the option, not deep
        inside a client library."""
        raw = self.options.get(name)
        if raw is None:
            return default
        try:
            value = cast(raw)
        except ValueError:
            value = None
        if value is None or not valid(value):
            raise ValueError(f"{self.kind}:{self.name}: option {name}={raw!r} is invalid; {name} must be {need}")
        return value

    def __str__(self) -> str:
        opts = "".join(f",{k}={v}" for k, v in sorted(self.options.items()))
        return f"{self.kind}:{self.name}{opts}"
