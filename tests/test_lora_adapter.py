"""``llamacpp:<base>,lora=<adapter folder>``: a student is committed as its PEFT adapter alone, and its llama.cpp GGUF
is derived from it once, into the cache, addressed by the adapter's content. On a tiny fake adapter (one llama layer),
so no model is loaded and nothing is trained."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from divcon.backends import CallLog, ModelSpec, load_backend
from divcon.backends.identity import lora_adapter_digest, resolve_identity
from divcon.backends.llamacpp import LlamaCppBackend
from divcon.backends.registry import sha256_file
from divcon.cli import app
from tests.conftest import needs_smollm2

pytest.importorskip("gguf")
safetensors_numpy = pytest.importorskip("safetensors.numpy")

from divcon.distill import export  # noqa: E402  (needs gguf at call time only, but the tests need it anyway)


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DIVCON_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def make_adapter(folder: Path, base: Path, seed: int = 0) -> Path:
    """A PEFT LoRA of the attention projections of a one-layer llama (hidden 8, 2 heads, 1 KV head), laid out as
    ``divcon distill train`` writes it; its base's config.json lives in ``base``."""
    base.mkdir(parents=True, exist_ok=True)
    (base / "config.json").write_text(json.dumps({"model_type": "llama", "num_hidden_layers": 1,
                                                  "num_attention_heads": 2, "num_key_value_heads": 1}))
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    tensors = {}
    for proj, rows in (("q_proj", 8), ("k_proj", 4), ("v_proj", 4), ("o_proj", 8)):
        pre = f"base_model.model.model.layers.0.self_attn.{proj}"
        tensors[f"{pre}.lora_A.weight"] = rng.standard_normal((2, 8)).astype(np.float32)
        tensors[f"{pre}.lora_B.weight"] = rng.standard_normal((rows, 2)).astype(np.float32)
    safetensors_numpy.save_file(tensors, str(folder / "adapter_model.safetensors"))
    (folder / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(base), "r": 2,
                                                            "lora_alpha": 4, "peft_type": "LORA"}))
    (folder / "divcon_train.json").write_text(json.dumps({"base_alias": "smollm2-135m"}))
    return folder


@pytest.fixture
def base_gguf(tmp_path) -> Path:
    """Stands in for the base model file: the backend checks it exists but these tests never load it."""
    path = tmp_path / "m.gguf"
    path.write_text("base")
    return path


def spec_of(base_gguf: Path, adapter: Path) -> str:
    return f"llamacpp:{base_gguf},lora={adapter},engine=inproc"


@pytest.fixture
def exports(monkeypatch):
    """Counts the exports the backend asks for."""
    calls = []
    real = export.export_lora_gguf
    monkeypatch.setattr(export, "export_lora_gguf", lambda *a, **k: calls.append(a) or real(*a, **k))
    return calls


def test_adapter_folder_derives_its_gguf_once_into_the_cache(tmp_path, base_gguf, cache, exports):
    adapter = make_adapter(tmp_path / "student", tmp_path / "base")
    first = LlamaCppBackend(ModelSpec.parse(spec_of(base_gguf, adapter)))
    derived = Path(first.lora)
    assert derived == cache / "loras" / f"{lora_adapter_digest(adapter)[:16]}.gguf"
    assert len(exports) == 1
    stamp = derived.stat().st_mtime_ns
    second = LlamaCppBackend(ModelSpec.parse(spec_of(base_gguf, adapter)))
    assert second.lora == first.lora and len(exports) == 1 and derived.stat().st_mtime_ns == stamp  # reused
    assert [p.name for p in derived.parent.iterdir()] == [derived.name]  # no temp file left behind
    assert not (adapter / "lora.gguf").exists()  # nothing derived is written into the (committed) adapter folder
    by_hand, _ = export.export_lora_gguf(adapter, tmp_path / "by_hand.gguf")
    assert derived.read_bytes() == by_hand.read_bytes()  # the very file `divcon distill export` writes


def test_retrained_adapter_gets_a_new_file_and_a_new_identity(tmp_path, base_gguf, cache):
    adapter = make_adapter(tmp_path / "student", tmp_path / "base", seed=0)
    spec = ModelSpec.parse(spec_of(base_gguf, adapter))
    log = CallLog(tmp_path / "calls.sqlite")
    before = LlamaCppBackend(spec).lora
    identity = resolve_identity(spec, log)
    make_adapter(tmp_path / "student", tmp_path / "base", seed=1)  # retrained into the same folder
    after = LlamaCppBackend(spec).lora
    assert after != before and Path(before).read_bytes() != Path(after).read_bytes()
    assert resolve_identity(spec, log) != identity


def test_identity_is_the_adapters_content_before_and_after_derivation(tmp_path, base_gguf, cache):
    adapter = make_adapter(tmp_path / "student", tmp_path / "base")
    spec = ModelSpec.parse(spec_of(base_gguf, adapter))
    log = CallLog(tmp_path / "calls.sqlite")
    before = resolve_identity(spec, log)
    assert not (cache / "loras").exists()  # resolving the identity derives nothing
    LlamaCppBackend(spec)
    assert (cache / "loras").is_dir()
    assert resolve_identity(spec, log) == before
    assert ("lora_adapter", lora_adapter_digest(adapter)) in before.files
    # the same folder by another path is the same model
    relative = ModelSpec.parse(f"llamacpp:{base_gguf},lora={tmp_path / 'student' / '..' / 'student'}")
    assert resolve_identity(relative, log) == before


def test_a_folder_without_an_adapter_is_one_line_naming_it(tmp_path, base_gguf, cache):
    empty = tmp_path / "not-a-student"
    empty.mkdir()
    (empty / "README.md").write_text("hello")
    with pytest.raises(FileNotFoundError) as e:
        load_backend(spec_of(base_gguf, empty), CallLog(tmp_path / "calls.sqlite"))
    msg = str(e.value)
    assert "\n" not in msg and str(empty) in msg
    assert "adapter_model.safetensors and adapter_config.json missing" in msg
    with pytest.raises(FileNotFoundError, match="adapter_model.safetensors and adapter_config.json missing"):
        LlamaCppBackend(ModelSpec.parse(spec_of(base_gguf, empty)))

    r = CliRunner().invoke(app, ["eval", "--task", "gsm8k", "--limit", "1", "--mode", "cot",
                                 "--solver", spec_of(base_gguf, empty), "--out", str(tmp_path / "run")])
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert "adapter_config.json missing" in r.stderr
    assert not (tmp_path / "run").exists()


def test_an_adapter_not_made_by_divcon_train_is_one_line_and_leaves_no_file(tmp_path, base_gguf, cache):
    adapter = make_adapter(tmp_path / "student", tmp_path / "base")
    (adapter / "divcon_train.json").unlink()
    with pytest.raises(export.ExportError) as e:
        LlamaCppBackend(ModelSpec.parse(spec_of(base_gguf, adapter)))
    msg = str(e.value)
    assert "\n" not in msg and f"lora={adapter}" in msg and "divcon_train.json not found" in msg
    assert not any((cache / "loras").iterdir())  # neither a half-written GGUF nor a temp file


def test_the_base_is_the_record_else_the_model_it_is_loaded_on_and_they_must_agree(tmp_path):
    adapter = make_adapter(tmp_path / "student", tmp_path / "base")
    assert export.base_alias(adapter) == export.base_alias(adapter, "smollm2-135m") == "smollm2-135m"
    with pytest.raises(export.ExportError, match="trained on smollm2-135m, not on qwen2.5-0.5b"):
        export.base_alias(adapter, "qwen2.5-0.5b")  # a LoRA on other weights would decode nonsense silently
    (adapter / "divcon_train.json").unlink()  # a shipped student: adapter files only, its base in the manifest
    assert export.base_alias(adapter, "qwen2.5-0.5b") == "qwen2.5-0.5b"
    with pytest.raises(export.ExportError, match="divcon_train.json not found"):
        export.base_alias(adapter)


def test_a_gguf_file_still_works_as_before(tmp_path, base_gguf):
    lora = tmp_path / "lora.gguf"
    lora.write_text("APPLE")
    spec = ModelSpec.parse(f"llamacpp:{base_gguf},lora={lora},engine=inproc")
    assert LlamaCppBackend(spec).lora == str(lora)
    assert ("lora", sha256_file(lora)) in resolve_identity(spec).files


@needs_smollm2
def test_base_config_comes_from_the_gguf_without_converting_the_base(cache):
    """A fresh machine has no HF copy of the base: the four fields the export needs are read from the GGUF's
    metadata, not from a float32 HF folder made for the purpose."""
    cfg = export.base_config({"base_model_name_or_path": "smollm2-135m"}, "smollm2-135m")
    assert cfg == {"model_type": "llama", "num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3}
    assert not (cache / "hf").exists()


def test_hf_student_uses_the_base_tokenizer_unless_its_folder_has_one(tmp_path):
    from divcon.backends.transformers_backend import tokenizer_source

    adapter = tmp_path / "student"
    adapter.mkdir()
    assert tokenizer_source("/base", str(adapter)) == "/base"
    (adapter / "tokenizer_config.json").write_text("{}")  # an adapter trained before train stopped saving a copy
    assert tokenizer_source("/base", str(adapter)) == str(adapter)
    assert tokenizer_source("/base", None) == "/base"
