"""Ship a trained student inside divcon: its LoRA adapter folder becomes an embedded alias (``llamacpp:<alias>``)
usable offline right after set-up, pinned by digest, with a training card saying how it was made.

Only the PEFT adapter is copied (``adapter_model.safetensors`` and ``adapter_config.json``, a few MB): its llama.cpp
GGUF is derived from it on first use into the cache, so the package holds one copy of the binary. The card comes from
the files training left (``divcon_train.json``, the training set's ``.counts.json``) plus the commit and the evidence
the caller names (the report that made it the best student)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

from divcon.backends import registry
from divcon.backends.identity import LORA_ADAPTER_FILES, lora_adapter_digest
from divcon.backends.registry import EMBEDDED, students
from divcon.runs import write_json
from divcon.tasks.base import FAMILIES

# of divcon_train.json (its "config", then its results): what someone reusing the student asks
CARD_CONFIG = ("data", "epochs", "lr", "lora_r", "max_len")
CARD_RESULT = ("examples", "examples_trained", "steps", "final_loss", "mean_loss", "seconds_per_step", "total_seconds",
               "device")


def _commit() -> str | None:
    """The commit the student is shipped from (None outside a git checkout)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def card_of(adapter: Path, evidence: str) -> dict:
    """The training card: base, training data and its counts, steps and loss, the commit, the evidence."""
    meta_path = adapter / "divcon_train.json"
    if not meta_path.exists():
        raise ValueError(f"{adapter} has no divcon_train.json: ship a student that `divcon distill train` made")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    config = {k: meta["config"][k] for k in CARD_CONFIG if k in meta.get("config", {})}
    data = Path(str(config.get("data", "")))
    if data.is_absolute():  # a committed card names no machine path
        config["data"] = data.relative_to(Path.cwd()).as_posix() if data.is_relative_to(Path.cwd()) else data.name
    counts = data.with_suffix(".counts.json")
    card = {"config": config, **{k: meta[k] for k in CARD_RESULT if k in meta}}
    if counts.is_file():
        card["data_counts"] = json.loads(counts.read_text(encoding="utf-8"))
    return card | {"commit": _commit(), "evidence": evidence}


def ship(adapter: Path, alias: str, title: str, evidence: str, root: Path | None = None,
         default_for: tuple[str, ...] = ()) -> dict:
    """Copy ``adapter`` into ``root/<alias>`` (default: the package's resources/students) and pin it in
    ``root/students.json``; returns the manifest entry. Re-shipping an alias replaces it (a retrained student gets a
    new digest). ``default_for`` names the task families whose default decomposer it becomes (another student that
    was the default for one of them stops being it)."""
    root = root or registry.STUDENTS_DIR
    if alias in EMBEDDED:
        raise ValueError(f"{alias!r} is an embedded base model's alias; choose another name")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", alias):
        raise ValueError(f"alias {alias!r}: use letters, digits, dots and dashes (it is written in model specs)")
    digest = lora_adapter_digest(adapter)  # also checks that it is an adapter folder
    card = card_of(adapter, evidence)
    base = json.loads((adapter / "divcon_train.json").read_text(encoding="utf-8")).get("base_alias")
    if base not in EMBEDDED:
        raise ValueError(f"{adapter}: its base ({base!r}) is not an embedded model, so it could not run offline")
    unknown = set(default_for) - set(FAMILIES)
    if unknown:
        raise ValueError(f"unknown task families {sorted(unknown)}; families: {', '.join(FAMILIES)}")
    entry = {"title": title, "base": base, "digest": digest, "card": card, "default_for": list(default_for)}
    folder = root / alias
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for name in LORA_ADAPTER_FILES:
        shutil.copyfile(adapter / name, folder / name)
    manifest = {a: {"title": s.title, "base": s.base, "digest": s.digest, "card": s.card,
                    "default_for": [f for f in s.default_for if f not in default_for]}
                for a, s in students(root).items()} | {alias: entry}
    write_json(root / "students.json", manifest)
    return entry
