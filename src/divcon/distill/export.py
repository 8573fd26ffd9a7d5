"""Export a PEFT LoRA adapter as a llama.cpp LoRA GGUF, so a student decodes at llama.cpp speed on its GGUF base.

A student is trained on the float32 HF copy of an embedded GGUF (see transformers_backend.hf_dir_for_alias), so the
base weights llama.cpp runs are the very weights the adapter was trained against; only the small A/B matrices need
writing. That is much smaller and simpler than merging into a new full GGUF: llama.cpp applies the adapter at load
time (``llamacpp:<alias>,lora=<file>``).

The GGUF is derived, not kept: ``llamacpp:<alias>,lora=<adapter folder>`` makes it on first use into
``<cache>/loras/<digest>.gguf`` (:func:`derived_lora_gguf`), addressed by the adapter's content, so a committed student
is its PEFT adapter alone. ``divcon distill export`` writes the same file wherever asked.

The file layout follows llama.cpp's own converter (convert_lora_to_gguf.py): ``general.type = adapter``,
``adapter.type = lora``, ``adapter.lora.alpha``, and per target tensor ``<gguf name>.lora_a`` (rank x in) and
``.lora_b`` (out x rank). llama.cpp scales by alpha / rank, as PEFT does. For the llama architecture the GGUF
converter permutes the rows of the q and k projections (rotary layout); a row permutation of B @ A is the same
permutation of B, so only B is permuted.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import numpy as np

# HF model_type -> (gguf architecture name, whether q/k rows are permuted by the GGUF converter)
ARCHS = {"llama": ("LLAMA", True), "qwen2": ("QWEN2", False)}


class ExportError(ValueError):
    pass


def _permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """The row permutation convert_hf_to_gguf applies to llama q/k weights (interleaved -> halves rotary)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def base_config(adapter_cfg: dict, alias: str) -> dict:
    """The base model's HF config: from the folder the adapter names, else the fields the export needs read from the
    metadata of the GGUF it was trained on (a fresh machine has no converted HF copy of the base, and making one
    would load torch and write the whole model in float32 just to read four numbers)."""
    base = Path(adapter_cfg.get("base_model_name_or_path") or "")
    if (base / "config.json").exists():
        return json.loads((base / "config.json").read_text(encoding="utf-8"))
    return gguf_config(alias)


def gguf_config(alias: str) -> dict:
    """The HF config fields the export reads, from an embedded model's GGUF metadata (convert_hf_to_gguf wrote them
    there from the same config.json; the GGUF architecture names are the HF model types of :data:`ARCHS`)."""
    import gguf

    from divcon.backends.registry import resolve_gguf

    reader = gguf.GGUFReader(str(resolve_gguf(alias)))

    def value(key: str):
        field = reader.get_field(key)
        return field.contents() if field is not None else None

    arch = value(gguf.Keys.General.ARCHITECTURE)
    return {"model_type": arch, "num_hidden_layers": value(f"{arch}.block_count"),
            "num_attention_heads": value(f"{arch}.attention.head_count"),
            "num_key_value_heads": value(f"{arch}.attention.head_count_kv")}


def base_alias(adapter_dir: Path, loaded_on: str | None = None) -> str:
    """The embedded model the student was trained from, as recorded by ``divcon distill train``; for an adapter
    without that record (a shipped student carries only its adapter files, its base pinned in the students
    manifest), ``loaded_on``: the embedded model the backend applies it to. Where both are known they must agree,
    since a LoRA on other weights than its own decodes nonsense without any error."""
    info = adapter_dir / "divcon_train.json"
    if not info.exists():
        if loaded_on:
            return loaded_on
        raise ExportError(f"{info} not found: the adapter was not made by `divcon distill train`, so its GGUF base "
                          "is unknown")
    alias = json.loads(info.read_text(encoding="utf-8")).get("base_alias")
    if not alias:
        raise ExportError(f"{adapter_dir} was trained from a model folder, not an embedded GGUF model: there is no "
                          "GGUF base for llama.cpp to apply the adapter to")
    if loaded_on and loaded_on != alias:
        raise ExportError(f"{adapter_dir} was trained on {alias}, not on {loaded_on}: apply it to its own base "
                          f"(llamacpp:{alias},lora=...)")
    return alias


def export_lora_gguf(adapter_dir: Path, out: Path | None = None, loaded_on: str | None = None) -> tuple[Path, str]:
    """Write ``<adapter_dir>/lora.gguf`` (or ``out``); returns the file and the backend spec that serves it.
    ``loaded_on``: the embedded model it is for, where the caller knows it (see :func:`base_alias`)."""
    import gguf
    from safetensors.numpy import load_file

    adapter_dir = Path(adapter_dir)
    out = Path(out) if out else adapter_dir / "lora.gguf"
    alias = base_alias(adapter_dir, loaded_on)  # every check runs before the file is opened: no half-written GGUF
    acfg = json.loads((adapter_dir / "adapter_config.json").read_text(encoding="utf-8"))
    if acfg.get("rank_pattern") or acfg.get("alpha_pattern"):
        raise ExportError("per-module ranks or alphas cannot be written as one llama.cpp LoRA alpha")
    # llama.cpp scales by alpha / r; rank-stabilised LoRA scales by alpha / sqrt(r)
    alpha = float(acfg["lora_alpha"]) * (float(acfg["r"]) ** 0.5 if acfg.get("use_rslora") else 1.0)
    hf = base_config(acfg, alias)
    if hf.get("model_type") not in ARCHS:
        raise ExportError(f"no GGUF LoRA export for model_type {hf.get('model_type')!r} (supported: "
                          f"{', '.join(ARCHS)})")
    arch_name, permutes = ARCHS[hf["model_type"]]
    arch = getattr(gguf.MODEL_ARCH, arch_name)
    names = gguf.TensorNameMap(arch, hf["num_hidden_layers"])
    n_head, n_head_kv = hf["num_attention_heads"], hf.get("num_key_value_heads") or hf["num_attention_heads"]

    tensors = load_file(str(adapter_dir / "adapter_model.safetensors"))
    pairs: dict[str, dict[str, np.ndarray]] = {}
    for key, value in tensors.items():
        # base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight -> model.layers.0.self_attn.q_proj.weight
        if ".lora_A." not in key and ".lora_B." not in key:
            raise ExportError(f"unsupported adapter tensor {key} (only LoRA A/B matrices can be exported)")
        part = "a" if ".lora_A." in key else "b"
        hf_name = key.removeprefix("base_model.model.").replace(f".lora_{part.upper()}", "")
        name = names.get_name(hf_name, try_suffixes=(".weight",))
        if name is None:
            raise ExportError(f"no GGUF name for {hf_name}")
        pairs.setdefault(name, {})[part] = value.astype(np.float32)
    incomplete = [name for name, ab in pairs.items() if set(ab) != {"a", "b"}]
    if incomplete:
        raise ExportError(f"LoRA A or B matrix missing for {', '.join(sorted(incomplete))}")
    writer = gguf.GGUFWriter(str(out), gguf.MODEL_ARCH_NAMES[arch])
    writer.add_string(gguf.Keys.General.TYPE, gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
    for name, ab in sorted(pairs.items()):
        b = ab["b"]
        if permutes and ".attn_q." in name:
            b = _permute(b, n_head)
        elif permutes and ".attn_k." in name:
            b = _permute(b, n_head_kv)
        writer.add_tensor(name + ".lora_a", ab["a"])
        writer.add_tensor(name + ".lora_b", np.ascontiguousarray(b))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out, f"llamacpp:{alias},lora={out}"


def derived_lora_gguf(adapter_dir: Path, loaded_on: str | None = None) -> Path:
    """The llama.cpp GGUF of a PEFT adapter folder, exported on first use into ``<cache>/loras/<digest>.gguf`` and
    reused afterwards. ``digest`` is the first 16 hex digits of the adapter's identity
    (:func:`divcon.backends.identity.lora_adapter_digest`, over adapter_model.safetensors and adapter_config.json), so
    an adapter retrained into the same folder gets a new file. Written to a temp file and renamed into place: two
    processes deriving it at once each write their own and never see a half-written one. Errors are one line naming
    the folder. ``loaded_on``: the embedded model the backend applies it to (:func:`base_alias`)."""
    from divcon.backends.identity import lora_adapter_digest
    from divcon.paths import cache_dir

    adapter_dir = Path(adapter_dir)
    digest = lora_adapter_digest(adapter_dir)  # FileNotFoundError naming the folder and the missing files
    out = cache_dir() / "loras" / f"{digest[:16]}.gguf"
    if out.is_file():
        return out
    try:
        import gguf  # noqa: F401
        import safetensors  # noqa: F401
    except ImportError as e:
        raise ExportError(f"lora={adapter_dir}: deriving its llama.cpp GGUF needs the {e.name} package (pip install "
                          "-e '.[train]'), or point lora= at a .gguf file made by `divcon distill export`") from None
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f"{out.stem}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        export_lora_gguf(adapter_dir, tmp, loaded_on)
        os.replace(tmp, out)
    except ExportError as e:
        raise ExportError(f"lora={adapter_dir}: cannot derive its llama.cpp GGUF: {e}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return out
