"""Hugging Face models through transformers (+ an optional PEFT LoRA adapter): how fine-tuned students are served.

``hf:/path/to/dir`` loads a model folder; when the folder is a PEFT adapter (it has adapter_config.json) its base
model is loaded first and the adapter applied, with the base's tokenizer (see :func:`tokenizer_source`).
``hf:<alias>`` uses an embedded model converted once from its GGUF to a regular HF folder in the cache. Option
``adapter=/path`` applies an adapter on top of any base.
"""

from __future__ import annotations

import json
import threading
import time
from functools import lru_cache
from pathlib import Path

from divcon.backends.base import ChatRequest, Generation, ModelSpec
from divcon.backends.registry import EMBEDDED, ChecksumMismatch, lookup, resolve_gguf, verified
from divcon.paths import cache_dir


def hf_dir_for_alias(alias: str, gguf: Path | None = None) -> Path:
    """Convert an embedded GGUF to a float32 HF folder once (transformers dequantizes it), then reuse it.

    ``gguf`` is the model's file brought by hand, for a machine without the embedded packages (a GPU machine that
    trains students, see benchmarks/train_on_gpu.py); it must match the pinned sha256 like the packaged file.
    ``save_pretrained`` refuses a model loaded from GGUF until its quantizer marker is dropped.
    """
    out = cache_dir() / "hf" / alias
    if (out / "config.json").exists():
        return out
    if gguf is None:
        gguf = resolve_gguf(alias)
    elif not verified(gguf, lookup(alias).sha256):
        raise ChecksumMismatch(f"{gguf} does not match the pinned sha256 of {alias}; refusing to load it")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = out.with_name(out.name + ".tmp")
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    tmp.rename(out)
    return out


def resolve_base(name: str) -> Path:
    """An alias of an embedded model or a folder path."""
    if name in EMBEDDED:
        return hf_dir_for_alias(name)
    p = Path(name)
    if not p.exists():
        raise FileNotFoundError(f"no HF model folder at {p} (and {name!r} is not an embedded alias)")
    return p


def tokenizer_source(base: str, adapter: str | None) -> str:
    """Where a student's tokenizer and chat template come from: the adapter folder where it holds a copy (adapters
    trained before ``divcon distill train`` stopped saving one), else the base model, which is what that copy was."""
    if adapter and (Path(adapter) / "tokenizer_config.json").exists():
        return adapter
    return base


_DECODE = threading.Lock()  # one generate at a time: torch on a CPU gains nothing from two side by side


@lru_cache(maxsize=2)
def _load(base: str, adapter: str | None):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_source(base, adapter))
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter)
        model = model.merge_and_unload()  # merged weights decode as fast as the base model
    model.eval()
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok, model


class TransformersBackend:
    OPTIONS = {"adapter": "a PEFT LoRA adapter folder applied on top of the base"}

    def __init__(self, spec: ModelSpec):
        self.spec = str(spec)
        path = Path(spec.name)
        adapter = spec.options.get("adapter")
        if (path / "adapter_config.json").exists():
            adapter = str(path)
            base_name = json.loads((path / "adapter_config.json").read_text())["base_model_name_or_path"]
        else:
            base_name = spec.name
        self.base = str(resolve_base(base_name))
        self.adapter = adapter

    def load(self) -> None:
        with _DECODE:
            _load(self.base, self.adapter)

    def generate(self, requests: list[ChatRequest]) -> list[Generation]:
        with _DECODE:
            return self._generate(requests)

    def _generate(self, requests: list[ChatRequest]) -> list[Generation]:
        import torch

        tok, model = _load(self.base, self.adapter)
        out = []
        for req in requests:
            t0 = time.perf_counter()
            ids = tok.apply_chat_template(req.message_dicts(), add_generation_prompt=True, return_tensors="pt",
                                          return_dict=True)
            gen_kwargs = dict(max_new_tokens=req.max_tokens, pad_token_id=tok.pad_token_id)
            if req.temperature > 0:
                torch.manual_seed(req.seed)
                gen_kwargs.update(do_sample=True, temperature=req.temperature)
            else:
                gen_kwargs.update(do_sample=False)
            with torch.no_grad():
                seq = model.generate(**ids, **gen_kwargs)
            new = seq[0, ids["input_ids"].shape[1]:]
            text = tok.decode(new, skip_special_tokens=True)
            finish = "length" if len(new) >= req.max_tokens else "stop"
            for s in req.stop:  # transformers has no plain stop strings for every model: cut after decoding
                if s in text:
                    text, finish = text.split(s, 1)[0], "stop"
            out.append(Generation(text=text, tokens_in=int(ids["input_ids"].shape[1]), tokens_out=int(len(new)),
                                  seconds=time.perf_counter() - t0, model=self.spec, finish_reason=finish))
        return out
