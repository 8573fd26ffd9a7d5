"""Model backends behind one interface, selected by spec strings, every call logged and cached.

Spec strings: ``llamacpp:qwen2.5-1.5b`` (or the bare alias), ``openai:gpt-4o-mini[,base_url=...]``,
``hf:/path/to/dir[,adapter=/path]``. Other packages can add backends through the ``divcon.backends`` entry-point
group (a callable taking a :class:`ModelSpec`), in the spirit of simonw/llm plugins.
"""

from __future__ import annotations

import importlib.metadata as md
import re
from typing import Callable

from divcon.backends.base import (Backend, BackendUnavailable, ChatRequest, Generation, ModelSpec, OnText,
                                  RequestRejected, Streaming, hand_over, stream_one)
from divcon.backends.calllog import CallLog
from divcon.backends.identity import ModelIdentity, resolve_identity
from divcon.backends.llamacpp import LlamaCppBackend
from divcon.backends.openai_backend import OpenAIBackend
from divcon.backends.transformers_backend import TransformersBackend
from divcon.paths import call_log_path

# Classes, not instances: constructing one checks its files; weights load on first use (or ``LoggedBackend.load``).
FACTORIES: dict[str, Callable[[ModelSpec], Backend]] = {
    "llamacpp": LlamaCppBackend, "openai": OpenAIBackend, "hf": TransformersBackend}

# Options every backend accepts: read by cost accounting, not by the backend.
COMMON_OPTIONS = {"params_b": "parameters in billions: prices a local model relative to the reference model"}

# An option named like a credential would be written to config.json, records and the call log: refused outright.
_SECRET = re.compile(r"key|token|secret|passw", re.IGNORECASE)


def register_backend(kind: str, factory: Callable[[ModelSpec], Backend]) -> None:
    FACTORIES[kind] = factory


def _factory(kind: str) -> Callable[[ModelSpec], Backend]:
    if kind not in FACTORIES:
        for ep in md.entry_points(group="divcon.backends"):
            if ep.name == kind:
                FACTORIES[kind] = ep.load()
    if kind not in FACTORIES:
        raise ValueError(f"unknown backend {kind!r}; available: {', '.join(sorted(FACTORIES))}")
    return FACTORIES[kind]


def validate_spec(spec: str) -> ModelSpec:
    """Parse a spec and check what can be checked without touching files: the backend kind, its declared options
    (``OPTIONS`` on the factory, plus :data:`COMMON_OPTIONS`), no secret in an option, an embedded alias."""
    parsed = ModelSpec.parse(spec)
    factory = _factory(parsed.kind)
    declared: dict[str, str] = {**COMMON_OPTIONS, **getattr(factory, "OPTIONS", {})}
    for name in parsed.options:
        # the messages name the model and the option, never the option's value: it may be a secret
        where = f"{parsed.kind}:{parsed.name}"
        if _SECRET.search(name):
            raise ValueError(f"option {name!r} of {where}: secrets are never accepted in a model spec (they would be "
                             "written to run files and the call log); set them in the environment, e.g. "
                             "OPENAI_API_KEY")
        if name not in declared:
            known = ", ".join(sorted(declared)) or "none"
            raise ValueError(f"unknown option {name!r} of {where}; options of the {parsed.kind} backend: {known}")
    if parsed.kind == "llamacpp" and not parsed.name.endswith(".gguf"):
        from divcon.backends.registry import lookup, students

        if parsed.name not in students():  # a shipped student's adapter is verified when the model is resolved
            lookup(parsed.name)
    return parsed


class LoggedBackend:
    """Wraps a backend with the call log, keyed on the model's resolved identity (see
    :mod:`divcon.backends.identity`), so equivalent spellings share the cache and replaced weights never hit it.
    The wrapped model is built on :meth:`load` or the first cache miss, so a fully cached re-run loads no weights."""

    def __init__(self, spec: str, log: CallLog):
        self.parsed = validate_spec(spec)
        self.spec = str(self.parsed)
        self.log = log
        self.identity: ModelIdentity = resolve_identity(self.parsed, log)
        self._inner: Backend | None = None

    @property
    def inner(self) -> Backend:
        if self._inner is None:
            self._inner = _factory(self.parsed.kind)(self.parsed)
        return self._inner

    @property
    def concurrency(self) -> int:
        """Requests the backend serves at once (1 for an in-process model that decodes one sequence at a time)."""
        return int(getattr(self.inner, "concurrency", 1))

    def load(self) -> None:
        """Build the backend and load its weights now, so a model that cannot load fails before a run dir exists."""
        warm = getattr(self.inner, "load", None)
        if warm is not None:
            warm()

    def generate(self, requests: list[ChatRequest]) -> list[Generation]:
        key = self.identity.key
        results: list[Generation | None] = [self.log.get(key, self.spec, r) for r in requests]
        missing = [i for i, g in enumerate(results) if g is None]
        if missing:
            fresh = self.inner.generate([requests[i] for i in missing])
            for i, g in zip(missing, fresh):
                self.log.put(key, self.spec, requests[i], g)
                results[i] = g
        return results  # type: ignore[return-value]

    def stream(self, request: ChatRequest, on_text: OnText) -> Generation:
        """One request with its text passed to ``on_text`` as it is generated (see :class:`Streaming`), under the
        call log's guarantees: a logged answer is replayed (its text as one piece, no model call) and a fresh one is
        logged when it completes, under the same key as ``generate`` uses, so streamed and non-streamed calls share
        the cache both ways. A call that fails midway is not logged."""
        key = self.identity.key
        gen = self.log.get(key, self.spec, request)
        if gen is not None:
            return hand_over(gen, on_text)
        gen = stream_one(self.inner, request, on_text)
        self.log.put(key, self.spec, request, gen)
        return gen


_LOGS: dict[str, CallLog] = {}


def default_log() -> CallLog:
    path = str(call_log_path())
    if path not in _LOGS:
        _LOGS[path] = CallLog(path)
    return _LOGS[path]


def load_backend(spec: str, log: CallLog | None = None) -> LoggedBackend:
    return LoggedBackend(spec, log or default_log())


__all__ = ["Backend", "BackendUnavailable", "CallLog", "ChatRequest", "Generation", "LoggedBackend", "ModelIdentity",
           "ModelSpec", "OnText", "RequestRejected", "Streaming", "load_backend", "register_backend", "stream_one",
           "validate_spec"]
