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
GATE_MARGIN = 0.03  # non-inferiority margin of the default gate, the claims page's "at least"
CARD_RESULT = ("examples", "examples_trained", "steps", "final_loss", "mean_loss", "seconds_per_step", "train_seconds",
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
    if data.is_absolute():
        config["data"] = _portable(data)
    counts = data.with_suffix(".counts.json")
    card = {"config": config, **{k: meta[k] for k in CARD_RESULT if k in meta}}
    if counts.is_file():
        card["data_counts"] = json.loads(counts.read_text(encoding="utf-8"))
    return card | {"commit": _commit(), "evidence": evidence}


def _portable(path: Path) -> str:
    """``path`` as a committed card may name it, never a machine path: relative to the working dir where it lies
    under it, else its last part."""
    path = path.resolve()
    return path.relative_to(Path.cwd()).as_posix() if path.is_relative_to(Path.cwd()) else path.name


def default_gate(adapter: Path, base: str, student_run: Path, teacher_run: Path) -> dict:
    """The evidence that lets a student become a family's default decomposer (issue 14: "only if it is at least as
    good as the teacher decomposer"): ``student_run`` was decomposed by this very adapter (its run config's
    decomposer identity is the adapter's content on ``base``), ``teacher_run`` answered the same task and split with
    the same solver, and on the questions both answered the student's row is not worse, the claims page's paired
    non-inferiority test (:data:`GATE_MARGIN`). Returns the test's numbers for the card; ValueError says which
    condition failed, with the numbers, so a student is never made the default on a hunch."""
    from divcon.backends import load_backend
    from divcon.experiments.claims import HOLDS, Comparison, evaluate_test

    configs = []
    for run in (student_run, teacher_run):
        if not (run / "config.json").is_file() or not (run / "records.jsonl").is_file():
            raise ValueError(f"{run} is not a run dir with records (config.json and records.jsonl)")
        configs.append(json.loads((run / "config.json").read_text(encoding="utf-8")))
    mine, theirs = configs
    key = load_backend(f"llamacpp:{base},lora={adapter}").identity.key
    if (mine.get("models") or {}).get("decomposer") != key:
        raise ValueError(f"{student_run} was not decomposed by {adapter} (its decomposer is {mine.get('decomposer')}, "
                         "identity differs): gate on the run of this adapter")
    same = ("task", "split")
    if [mine.get(k) for k in same] != [theirs.get(k) for k in same] or \
            (mine.get("models") or {}).get("solver") != (theirs.get("models") or {}).get("solver"):
        raise ValueError(f"{student_run} and {teacher_run} differ in task, split or solver: not a comparison of "
                         "decomposers")
    test = evaluate_test(Comparison(kind="at_least", a=str(student_run), b=str(teacher_run), margin=GATE_MARGIN),
                         Path("."))
    if not test["n"]:
        raise ValueError(f"{student_run} and {teacher_run} have no question in common")
    lo, hi = test["ci95"]
    numbers = (f"{test['metric']} {test['a_mean']:.3f} vs {test['b_mean']:.3f}, paired {test['estimate']:+.3f} "
               f"[{lo:+.3f}, {hi:+.3f}] at n={test['n']}")
    if test["verdict"] != HOLDS:
        raise ValueError(f"not at least as good as the teacher decomposer ({numbers}): {test['verdict']} at margin "
                         f"{GATE_MARGIN}; ship it without --default-for")
    return {"student_run": _portable(student_run), "teacher_run": _portable(teacher_run), "n": test["n"],
            "metric": test["metric"], "student": test["a_mean"], "teacher": test["b_mean"],
            "paired_diff": test["estimate"], "ci95": test["ci95"], "margin": GATE_MARGIN, "verdict": test["verdict"]}


def ship(adapter: Path, alias: str, title: str, evidence: str, root: Path | None = None,
         default_for: tuple[str, ...] = (), gate_runs: tuple[Path, Path] | None = None) -> dict:
    """Copy ``adapter`` into ``root/<alias>`` (default: the package's resources/students) and pin it in
    ``root/students.json``; returns the manifest entry. Re-shipping an alias replaces it (a retrained student gets a
    new digest). ``default_for`` names the task families whose default decomposer it becomes (another student that
    was the default for one of them stops being it); it needs ``gate_runs`` (the student's run, the teacher
    decomposer's run) passing :func:`default_gate`, whose numbers go into the card."""
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
    if default_for:
        if gate_runs is None:
            raise ValueError("a default decomposer needs evidence: the student's run and the teacher decomposer's run "
                             "on the same questions (e.g. Table 1's SD-route/T and T/T)")
        card["default_gate"] = default_gate(adapter, base, *gate_runs)
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
