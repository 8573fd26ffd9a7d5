"""Any OpenAI-compatible server (OpenAI, vLLM, llama.cpp server, Ollama) through the official ``openai`` client.

``openai:<model>[,base_url=http://host:8000/v1][,workers=8]``. The key comes from $OPENAI_API_KEY (or
$DIVCON_OPENAI_API_KEY), the base URL from the option or $OPENAI_BASE_URL. Retries with exponential backoff on
429, 5xx, connection errors and timeouts are the client's own (``max_retries``).
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor

from divcon.backends.base import ChatRequest, Generation, ModelSpec


class OpenAIBackend:
    def __init__(self, spec: ModelSpec):
        from openai import OpenAI

        self.spec = str(spec)
        self.model = spec.name
        base_url = spec.options.get("base_url") or os.environ.get("OPENAI_BASE_URL")
        api_key = os.environ.get("DIVCON_OPENAI_API_KEY") or os.environ.get("OPENAI_API_KEY")
        if not api_key:
            if base_url:  # local servers accept any key
                api_key = "not-needed"
            else:
                raise RuntimeError(f"{self.spec}: set OPENAI_API_KEY (or pass base_url=... for a local server)")
        self.workers = int(spec.options.get("workers", 4))
        self.client = OpenAI(
            base_url=base_url,
            api_key=api_key,
            max_retries=int(spec.options.get("retries", 6)),
            timeout=float(spec.options.get("timeout", 120)),
        )

    def _one(self, req: ChatRequest) -> Generation:
        t0 = time.perf_counter()
        resp = self.client.chat.completions.create(
            model=self.model,
            messages=req.message_dicts(),
            max_tokens=req.max_tokens,
            temperature=req.temperature,
            stop=list(req.stop) or None,
            seed=req.seed,
        )
        choice = resp.choices[0]
        usage = resp.usage
        return Generation(
            text=choice.message.content or "",
            tokens_in=usage.prompt_tokens if usage else 0,
            tokens_out=usage.completion_tokens if usage else 0,
            seconds=time.perf_counter() - t0,
            model=self.spec,
            finish_reason=choice.finish_reason or "stop",
        )

    def generate(self, requests: list[ChatRequest]) -> list[Generation]:
        if len(requests) <= 1:
            return [self._one(r) for r in requests]
        with ThreadPoolExecutor(self.workers) as pool:
            return list(pool.map(self._one, requests))
