"""What a model *is*, as opposed to how it was spelled: the key of the call cache and of the resume check.

A spec string is not an identity. ``lora=runs/x/adapter`` names different weights in two checkouts and the same
weights after ``cd``; an adapter retrained at the same path is new weights under an old name; ``smollm2-135m`` and
``llamacpp:smollm2-135m`` are one model. So every spec is resolved once, when its backend is loaded, to a
:class:`ModelIdentity`: the backend kind, the model name where a server names it, the sha256 of every weight file
(model, LoRA, adapter folder), and the options that change outputs (an API's base URL). Two specs share cached
outputs exactly when their identities are equal.

``llamacpp:<base>,lora=<folder>`` names a PEFT adapter folder (what ``divcon distill train`` writes), whose llama.cpp
GGUF is derived from it on first use into the cache (see :func:`divcon.distill.export.derived_lora_gguf`). Its identity
is the adapter's own content, :func:`lora_adapter_digest` (the sha256 of ``adapter_model.safetensors`` and
``adapter_config.json``), role ``lora_adapter``: the same before and after the GGUF was derived, and never the digest
of the derived file, which is a function of those two files. A ``lora=`` naming a ``.gguf`` file is identified by that
file's digest (role ``lora``), so an adapter served from its folder and the same adapter exported by hand are two
identities that happen to give the same outputs (the call cache does not share them).

Hashing a 1 GB GGUF takes seconds, so a file's digest is remembered against (path, size, mtime, ctime, inode) in the
call log's database: a file swapped or rewritten under the same path changes its ctime and inode, so it is hashed
again; an untouched file never is.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from divcon.backends.base import ModelSpec
from divcon.backends.registry import EMBEDDED, expand_student, sha256_file

if TYPE_CHECKING:
    from divcon.backends.calllog import CallLog

OPENAI_DEFAULT_BASE_URL = "https://api.openai.com/v1"

# Files of an HF model or PEFT adapter folder that decide its outputs: weights, configs, tokenizer. Training logs,
# plots and an exported lora.gguf living in the same folder do not.
_HF_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".json", ".model", ".txt", ".jinja", ".tiktoken")
_HF_IGNORED = {"divcon_train.json", "trainer_state.json", "training_args.bin"}


@dataclass(frozen=True)
class ModelIdentity:
    kind: str
    name: str = ""  # the model name a server knows it by; empty for weights identified by their files
    files: tuple[tuple[str, str], ...] = ()  # (role, sha256), e.g. ("model", ...), ("lora", ...)
    options: tuple[tuple[str, str], ...] = ()  # output-changing options, e.g. ("base_url", ...)
    alias: str | None = field(default=None, compare=False)  # the embedded model these weights are, if any

    def as_dict(self) -> dict:
        return {"kind": self.kind, "name": self.name, "files": [list(f) for f in self.files],
                "options": [list(o) for o in self.options]}

    @property
    def key(self) -> str:
        """A short stable hash of the identity; what the call cache and run configs store."""
        blob = json.dumps(self.as_dict(), sort_keys=True)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:20]


def file_digest(path: Path, memo: "CallLog | None" = None) -> str:
    """sha256 of a file, remembered in the call log's database against the file's stat so it is computed once."""
    path = Path(path).resolve()
    st = path.stat()
    stamp = (str(path), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
    if memo is not None:
        known = memo.known_digest(*stamp)
        if known:
            return known
    digest = sha256_file(path)
    if memo is not None:
        memo.remember_digest(*stamp, digest)
    return digest


def folder_digest(folder: Path, memo: "CallLog | None" = None) -> str:
    """One digest for the output-deciding files at the top of a model or adapter folder."""
    files = sorted(p for p in Path(folder).iterdir()
                   if p.is_file() and p.suffix in _HF_WEIGHT_SUFFIXES and p.name not in _HF_IGNORED)
    if not files:
        raise FileNotFoundError(f"no model or adapter files in {folder}")
    blob = json.dumps([[p.name, file_digest(p, memo)] for p in files])
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


# The files of a PEFT adapter folder that its llama.cpp GGUF is derived from (divcon.distill.export).
LORA_ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json")


def lora_adapter_digest(folder: Path, memo: "CallLog | None" = None) -> str:
    """The identity of a LoRA adapter folder served by llama.cpp: one sha256 over the files its GGUF is derived from.
    Also the content address of the derived GGUF in the cache, so a retrained adapter gets a new file."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"LoRA adapter folder not found: {folder}")
    missing = [name for name in LORA_ADAPTER_FILES if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(f"lora={folder} is not a LoRA adapter folder: {' and '.join(missing)} missing "
                                "(expected a folder written by `divcon distill train`, or a .gguf file)")
    blob = json.dumps([[name, file_digest(folder / name, memo)] for name in LORA_ADAPTER_FILES])
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _embedded_alias(sha: str) -> str | None:
    return next((a for a, m in EMBEDDED.items() if m.sha256 == sha), None)


def _existing(path: str, what: str) -> Path:
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{what} not found: {path}")
    return p


def _llamacpp(spec: ModelSpec, memo: "CallLog | None") -> ModelIdentity:
    spec = expand_student(spec)  # a shipped student is its base and adapter: the same identity as served from a folder
    if spec.name in EMBEDDED:
        sha = EMBEDDED[spec.name].sha256  # pinned and verified on assembly: no need to read 1 GB here
    else:
        if not spec.name.endswith(".gguf"):
            from divcon.backends.registry import lookup

            lookup(spec.name)  # raises the 'unknown alias' error with the list of known ones
        sha = file_digest(_existing(spec.name, "GGUF file"), memo)
    files = [("model", sha)]
    lora = spec.options.get("lora")
    if lora and Path(lora).is_dir():  # a PEFT adapter folder: its content, whether or not its GGUF was derived yet
        files.append(("lora_adapter", lora_adapter_digest(Path(lora), memo)))
    elif lora:
        files.append(("lora", file_digest(_existing(lora, "LoRA GGUF"), memo)))
    return ModelIdentity("llamacpp", files=tuple(files), alias=_embedded_alias(sha))


def _hf_weights(name: str, memo: "CallLog | None") -> tuple[str, str | None]:
    """(digest, alias) of an HF base: an embedded alias (converted from its pinned GGUF) or a folder."""
    if name in EMBEDDED:
        return EMBEDDED[name].sha256, name
    return folder_digest(_existing(name, "HF model folder"), memo), None


def _hf(spec: ModelSpec, memo: "CallLog | None") -> ModelIdentity:
    path = Path(spec.name)
    files: list[tuple[str, str]] = []
    if (path / "adapter_config.json").exists():  # a PEFT adapter folder: its base, then the adapter
        base = json.loads((path / "adapter_config.json").read_text(encoding="utf-8"))["base_model_name_or_path"]
        digest, alias = _hf_weights(base, memo)
        files += [("model", digest), ("adapter", folder_digest(path, memo))]
    else:
        digest, alias = _hf_weights(spec.name, memo)
        files.append(("model", digest))
    if spec.options.get("adapter"):
        files.append(("adapter", folder_digest(_existing(spec.options["adapter"], "adapter folder"), memo)))
    return ModelIdentity("hf", files=tuple(files), alias=alias)


def _openai(spec: ModelSpec, memo: "CallLog | None") -> ModelIdentity:
    base_url = spec.options.get("base_url") or os.environ.get("OPENAI_BASE_URL") or OPENAI_DEFAULT_BASE_URL
    return ModelIdentity("openai", name=spec.name, options=(("base_url", base_url.rstrip("/")),))


RESOLVERS = {"llamacpp": _llamacpp, "hf": _hf, "openai": _openai}


def resolve_identity(spec: ModelSpec, memo: "CallLog | None" = None) -> ModelIdentity:
    """The identity of a parsed spec. Backends from plugins are identified by kind, name and every option, unless
    their factory carries an ``identity(spec) -> ModelIdentity`` of its own."""
    resolver = RESOLVERS.get(spec.kind)
    if resolver is not None:
        return resolver(spec, memo)
    from divcon.backends import _factory

    custom = getattr(_factory(spec.kind), "identity", None)
    if custom is not None:
        return custom(spec)
    return ModelIdentity(spec.kind, name=spec.name, options=tuple(sorted(spec.options.items())))
