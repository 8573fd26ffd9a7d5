"""Export a PEFT LoRA adapter as a llama.cpp LoRA GGUF, so a student decodes at llama.cpp speed on its GGUF base.

A student is trained on the float32 HF copy of an embedded GGUF (see transformers_backend.hf_dir_for_alias), so the
base weights llama.cpp runs are the very weights the adapter was trained against; only the small A/B matrices need
writing. That is much smaller and simpler than merging into a new full GGUF: llama.cpp applies the adapter at load
time (``llamacpp:<alias>,lora=<file>``).

The file layout follows llama.cpp's own converter (convert_lora_to_gguf.py): ``general.type = adapter``,
``adapter.type = lora``, ``adapter.lora.alpha``, and per target tensor ``<gguf name>.lora_a`` (rank x in) and
``.lora_b`` (out x rank). llama.cpp scales by alpha / rank, as PEFT does. For the llama architecture the GGUF
converter permutes the rows of the q and k projections (rotary layout); a row permutation of B @ A is the same
permutation of B, so only B is permuted.
"""

from __future__ import annotations

import json
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
    """The base model's HF config: from the folder the adapter names, else re-made from the alias it was trained
    on (a fresh machine has no copy of the converted base yet)."""
    base = Path(adapter_cfg.get("base_model_name_or_path") or "")
    if not (base / "config.json").exists():
        from divcon.backends.transformers_backend import resolve_base

        base = resolve_base(alias)
    return json.loads((base / "config.json").read_text(encoding="utf-8"))


def base_alias(adapter_dir: Path) -> str:
    """The embedded model the student was trained from, as recorded by ``divcon distill train``."""
    info = adapter_dir / "divcon_train.json"
    if not info.exists():
        raise ExportError(f"{info} not found: the adapter was not made by `divcon distill train`, so its GGUF base "
                          "is unknown")
    alias = json.loads(info.read_text(encoding="utf-8")).get("base_alias")
    if not alias:
        raise ExportError(f"{adapter_dir} was trained from a model folder, not an embedded GGUF model: there is no "
                          "GGUF base for llama.cpp to apply the adapter to")
    return alias


def export_lora_gguf(adapter_dir: Path, out: Path | None = None) -> tuple[Path, str]:
    """Write ``<adapter_dir>/lora.gguf`` (or ``out``); returns the file and the backend spec that serves it."""
    import gguf
    from safetensors.numpy import load_file

    adapter_dir = Path(adapter_dir)
    out = Path(out) if out else adapter_dir / "lora.gguf"
    alias = base_alias(adapter_dir)  # every check runs before the file is opened: no half-written GGUF on error
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
