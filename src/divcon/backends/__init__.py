"""Model backends behind one interface, selected by spec strings, every call logged and cached.

Spec strings: ``llamacpp:qwen2.5-1.5b`` (or the bare alias), ``openai:gpt-4o-mini[,base_url=...]``,
``hf:/path/to/dir[,adapter=/path]``. Other packages can add backends through the ``divcon.backends`` entry-point
group (a callable taking a :class:`ModelSpec`), in the spirit of simonw/llm plugins.
"""

from __future__ import annotations

import importlib.metadata as md
from typing import Callable

from divcon.backends.base import Backend, ChatRequest, Generation, ModelSpec
from divcon.backends.calllog import CallLog
from divcon.paths import call_log_path


def _llamacpp(spec: ModelSpec) -> Backend:
    from divcon.backends.llamacpp import LlamaCppBackend

    return LlamaCppBackend(spec)


def _openai(spec: ModelSpec) -> Backend:
    from divcon.backends.openai_backend import OpenAIBackend

    return OpenAIBackend(spec)


def _hf(spec: ModelSpec) -> Backend:
    from divcon.backends.transformers_backend import TransformersBackend

    return TransformersBackend(spec)


FACTORIES: dict[str, Callable[[ModelSpec], Backend]] = {"llamacpp": _llamacpp, "openai": _openai, "hf": _hf}


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
    """Parse a spec and check what can be checked without loading weights (backend kind, embedded alias)."""
    parsed = ModelSpec.parse(spec)
    _factory(parsed.kind)
    if parsed.kind == "llamacpp" and not parsed.name.endswith(".gguf"):
        from divcon.backends.registry import lookup

        lookup(parsed.name)
    return parsed


class LoggedBackend:
    """Wraps a backend with the call log. The wrapped model is only built on the first cache miss, so a fully cached
    re-run never loads weights."""

    def __init__(self, spec: str, log: CallLog):
        self.parsed = validate_spec(spec)
        self.spec = str(self.parsed)
        self.log = log
        self._inner: Backend | None = None

    @property
    def inner(self) -> Backend:
        if self._inner is None:
            self._inner = _factory(self.parsed.kind)(self.parsed)
        return self._inner

    def generate(self, requests: list[ChatRequest]) -> list[Generation]:
        results: list[Generation | None] = [self.log.get(self.spec, r) for r in requests]
        missing = [i for i, g in enumerate(results) if g is None]
        if missing:
            fresh = self.inner.generate([requests[i] for i in missing])
            for i, g in zip(missing, fresh):
                self.log.put(self.spec, requests[i], g)
                results[i] = g
        return results  # type: ignore[return-value]


_LOGS: dict[str, CallLog] = {}


def default_log() -> CallLog:
    path = str(call_log_path())
    if path not in _LOGS:
        _LOGS[path] = CallLog(path)
    return _LOGS[path]


def load_backend(spec: str, log: CallLog | None = None) -> LoggedBackend:
    return LoggedBackend(spec, log or default_log())


__all__ = ["Backend", "CallLog", "ChatRequest", "Generation", "LoggedBackend", "ModelSpec", "load_backend",
           "register_backend", "validate_spec"]
