"""The embedded default backend: GGUF models on llama.cpp, served by its batching server or run in-process."""

from __future__ import annotations

import atexit
import os
import threading
import time
from functools import lru_cache
from pathlib import Path

from divcon.backends.base import ChatRequest, Generation, ModelSpec, OnText, RequestRejected, hand_over
from divcon.backends.registry import expand_student, resolve_gguf


@lru_cache(maxsize=4)
def _load(path: str, n_ctx: int, n_threads: int, lora: str | None = None):
    """Loading a model takes seconds; pipelines that use one model as decomposer and solver share one instance."""
    from llama_cpp import Llama

    llm = Llama(model_path=path, n_ctx=n_ctx, n_threads=n_threads, n_batch=512, verbose=False, seed=0,
                lora_path=lora)
    _loaded.append(llm)
    return llm


_loaded: list = []
# One in-process decode at a time: a Llama object is not thread-safe, and on a CPU two decodes side by side only
# share the same cores. Questions in flight still overlap their waits with this (the call log, scoring).
_DECODE = threading.Lock()


@atexit.register
def _close_all() -> None:
    """Free models before interpreter teardown, where llama-cpp-python's own __del__ fails noisily."""
    for llm in _loaded:
        llm.close()
    _loaded.clear()
    _load.cache_clear()


ENGINES = ("server", "inproc")
DEFAULT_SLOTS = 8  # llama.cpp decodes 8 sequences at ~2.5x the tokens/s of one on 2 CPU cores (see the README)
LOCAL_OUTAGE_S = "15"  # a server divcon started does not come back by itself: give up soon, in one line
# With every slot busy on 2 cores a 512-token answer can take minutes; a client-side timeout would only resend it to
# a server that is still computing it.
LOCAL_TIMEOUT_S = "3600"


class LlamaCppBackend:
    """``llamacpp:<alias>`` for an embedded model or ``llamacpp:/path/model.gguf`` for any GGUF file.

    Two engines, one model: ``engine=server`` (the default where scripts/setup.sh built ``llama-server``) serves it
    from llama.cpp's own server, started by divcon on a loopback port (see :mod:`divcon.backends.engine`), which
    decodes ``slots=`` sequences per step and reuses the KV cache of a shared prompt prefix; divcon talks to it
    through the same client as any OpenAI-compatible server. ``engine=inproc`` runs llama-cpp-python in this
    process, one sequence at a time (the fallback where no server binary exists).
    """

    OPTIONS = {"ctx": "context length in tokens, per sequence (default 4096)",
               "threads": "CPU threads (default: all cores)",
               "lora": "a LoRA applied on load: an adapter GGUF, or the adapter folder `divcon distill train` "
                       "wrote (its GGUF is derived once into the cache)",
               "engine": "server (llama.cpp's batching server; default where built) | inproc (llama-cpp-python)",
               "slots": f"sequences the server engine decodes at once (default {DEFAULT_SLOTS})"}

    def __init__(self, spec: ModelSpec):
        from divcon.backends.engine import server_binary

        self.spec = str(spec)
        spec = expand_student(spec)
        alias = None if spec.name.endswith(".gguf") else spec.name  # an embedded model, else a GGUF file
        self.path = resolve_gguf(alias) if alias else Path(spec.name)
        if not self.path.exists():
            raise FileNotFoundError(f"GGUF file not found: {self.path}")
        self.n_ctx = int(spec.number("ctx", 4096, int, lambda v: v >= 256,  # llama-cpp-python breaks below 256
                                     "a whole number >= 256"))
        self.n_threads = int(spec.number("threads", os.cpu_count() or 2, int, lambda v: v >= 1, "a whole number >= 1"))
        self.lora = spec.options.get("lora")
        if self.lora and Path(self.lora).is_dir():  # a PEFT adapter folder: its GGUF, derived once into the cache
            from divcon.distill.export import derived_lora_gguf

            self.lora = str(derived_lora_gguf(Path(self.lora), alias))
        elif self.lora and not Path(self.lora).exists():
            raise FileNotFoundError(f"LoRA GGUF not found: {self.lora}")
        have_server = server_binary() is not None
        self.engine = spec.options.get("engine") or ("server" if have_server else "inproc")
        if self.engine not in ENGINES:
            raise ValueError(f"option engine={self.engine!r} in {spec}: expected one of {', '.join(ENGINES)}")
        if self.engine == "server" and not have_server:
            raise FileNotFoundError("engine=server needs llama-server: run scripts/setup.sh (it builds it), set "
                                    "DIVCON_LLAMA_SERVER, or use engine=inproc")
        self.slots = int(spec.number("slots", DEFAULT_SLOTS, int, lambda v: v >= 1, "a whole number >= 1"))
        self.concurrency = self.slots if self.engine == "server" else 1
        self._client = None
        self._client_lock = threading.Lock()

    @property
    def llm(self):
        with _DECODE:
            return _load(str(self.path), self.n_ctx, self.n_threads, self.lora)

    def client(self):
        """The OpenAI-compatible client of this model's server, starting the server on first use."""
        from divcon.backends.engine import get_server
        from divcon.backends.openai_backend import OpenAIBackend

        with self._client_lock:
            if self._client is None:
                srv = get_server(self.path, self.lora, self.n_ctx, self.slots, self.n_threads)
                self._client = OpenAIBackend(ModelSpec("openai", self.path.stem, {
                    "base_url": srv.base_url, "concurrency": str(self.slots), "outage": LOCAL_OUTAGE_S,
                    "timeout": LOCAL_TIMEOUT_S}), local=True)
            return self._client

    def load(self) -> None:
        """Load the weights now (a corrupt file fails here, before any run dir is made)."""
        if self.engine == "server":
            try:
                self.client()
            except RuntimeError as e:  # the server exited while loading: its log's first error is in the message
                raise FileNotFoundError(f"{self.spec}: cannot load {self.path}: {e}") from None
            return
        try:
            self.llm
        except ValueError as e:  # llama-cpp-python's "Failed to load model from file"
            raise FileNotFoundError(f"{self.spec}: cannot load {self.path}: {e}") from None

    def generate(self, requests: list[ChatRequest]) -> list[Generation]:
        if self.engine == "server":
            gens = self.client().generate(requests)
            for g in gens:
                g.model = self.spec  # priced and recorded as this model, not as the server's
            return gens
        return [self._inproc(req) for req in requests]

    def stream(self, request: ChatRequest, on_text: OnText) -> Generation:
        """Token by token from the server engine (see :meth:`OpenAIBackend.stream`); ``inproc`` decodes the whole
        answer first and hands it over as one piece (the same generation either way)."""
        if self.engine == "server":
            gen = self.client().stream(request, on_text)
            gen.model = self.spec
            return gen
        return hand_over(self._inproc(request), on_text)

    def _inproc(self, req: ChatRequest) -> Generation:
        t0 = time.perf_counter()
        llm = self.llm
        try:
            with _DECODE:
                resp = llm.create_chat_completion(messages=req.message_dicts(), max_tokens=req.max_tokens,
                                                  temperature=req.temperature, stop=list(req.stop) or None,
                                                  seed=req.seed)
        except ValueError as e:  # "Requested tokens (5000) exceed context window of 4096"
            if "context window" in str(e):
                raise RequestRejected(f"{self.spec}: {e} (raise it with ,ctx=N)") from None
            raise
        choice = resp["choices"][0]
        usage = resp.get("usage") or {}
        return Generation(text=choice["message"]["content"] or "", tokens_in=int(usage.get("prompt_tokens", 0)),
                          tokens_out=int(usage.get("completion_tokens", 0)), seconds=time.perf_counter() - t0,
                          model=self.spec, finish_reason=choice.get("finish_reason") or "stop")
