"""Model specs, the embedded-model registry, and the SQLite call log as a cache."""

import hashlib

import pytest

from divcon.backends import CallLog, ChatRequest, ModelSpec, load_backend, register_backend, validate_spec
from divcon.backends import registry
from divcon.cost import price_of
from tests.fakes import ScriptedBackend


def test_spec_parsing():
    s = ModelSpec.parse("hf:/tmp/student,adapter=/tmp/lora")
    assert (s.kind, s.name, s.options) == ("hf", "/tmp/student", {"adapter": "/tmp/lora"})
    assert ModelSpec.parse("qwen2.5-1.5b").kind == "llamacpp"
    assert str(ModelSpec.parse("openai:gpt-4o-mini,base_url=http://x/v1")) == "openai:gpt-4o-mini,base_url=http://x/v1"
    with pytest.raises(ValueError, match="empty model spec"):
        ModelSpec.parse("  ")
    with pytest.raises(ValueError, match="key=value"):
        ModelSpec.parse("hf:/x,oops")


def test_unknown_alias_and_backend_are_clear_errors():
    with pytest.raises(registry.ModelNotAvailable, match="unknown model alias 'gpt-17'.*smollm2-135m"):
        validate_spec("llamacpp:gpt-17")
    with pytest.raises(ValueError, match="unknown backend 'nope'"):
        validate_spec("nope:model")


def test_checksum_mismatch_refuses_to_load(tmp_path, monkeypatch):
    """Chunked packages are untrusted: a wrong byte means an error, never a silent load."""
    parts = [tmp_path / "a.bin", tmp_path / "b.bin"]
    parts[0].write_bytes(b"GGUF-part-one")
    parts[1].write_bytes(b"-part-two")
    good = hashlib.sha256(b"GGUF-part-one-part-two").hexdigest()
    model = registry.EmbeddedModel("toy", "toy", ("pkg-a", "pkg-b"), "toy.gguf", good, 0.001)
    monkeypatch.setitem(registry.EMBEDDED, "toy", model)
    monkeypatch.setattr(registry, "_package_file", lambda pkg, suffixes: parts[0] if pkg == "pkg-a" else parts[1])
    monkeypatch.setenv("DIVCON_CACHE", str(tmp_path / "cache"))
    path = registry.resolve_gguf("toy")
    assert path.read_bytes() == b"GGUF-part-one-part-two"
    path.unlink()
    parts[1].write_bytes(b"-part-TWO")  # tampered
    with pytest.raises(registry.ChecksumMismatch, match="expected"):
        registry.resolve_gguf("toy")
    assert not path.exists()


def test_a_gguf_brought_by_hand_is_checked_too(tmp_path, monkeypatch):
    """A GPU machine without the embedded packages brings the student's GGUF as a file (benchmarks/train_on_gpu.py);
    it is held to the same pinned sha256 before anything is converted from it."""
    from divcon.backends.transformers_backend import hf_dir_for_alias

    monkeypatch.setenv("DIVCON_CACHE", str(tmp_path / "cache"))
    brought = tmp_path / "SmolLM2-135M-Instruct.Q4_1.gguf"
    brought.write_bytes(b"not the pinned model")
    with pytest.raises(registry.ChecksumMismatch, match="smollm2-135m"):
        hf_dir_for_alias("smollm2-135m", gguf=brought)
    assert not (tmp_path / "cache" / "hf").exists()


def test_call_log_caches_by_model_prompt_and_params(tmp_path):
    register_backend("fake", ScriptedBackend)
    log = CallLog(tmp_path / "log.sqlite")
    b = load_backend("fake:cache-test", log)
    req = ChatRequest.of([{"role": "user", "content": "hello"}], max_tokens=10)
    first = b.generate([req])[0]
    again = b.generate([req])[0]
    assert not first.cached and again.cached
    assert (again.text, again.tokens_in, again.tokens_out) == (first.text, first.tokens_in, first.tokens_out)
    other_seed = ChatRequest.of([{"role": "user", "content": "hello"}], max_tokens=10, temperature=0.7, seed=1)
    assert not b.generate([other_seed])[0].cached
    assert log.count("fake:cache-test") == 2
    row = log.db.execute("SELECT prompt, params, output, tokens_in FROM calls LIMIT 1").fetchone()
    assert "hello" in row[0] and '"max_tokens": 10' in row[1] and row[2] == first.text and row[3] == 100


def test_prices_scale_local_models_by_parameters():
    big, small = price_of("llamacpp:qwen2.5-1.5b"), price_of("llamacpp:smollm2-135m")
    assert big.source == "params" and small.source == "params"
    assert big.out_per_1k / small.out_per_1k == pytest.approx(1.5 / 0.135)
    assert price_of("openai:gpt-4o-mini").source == "table"
    assert price_of("openai:unknown-model").dollars(1000, 1000) == 0.0
