"""Loaders for the offline data sets in ../shared/data (see SOURCES.md there). Each returns a list of Examples."""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import xml.etree.ElementTree as ET
from functools import lru_cache
from pathlib import Path

from divcon.paths import data_dir
from divcon.tasks.base import Example


class DataMissing(FileNotFoundError):
    """A data file is not where divcon looks; the message names the path and the override."""


def _file(*parts: str) -> Path:
    p = data_dir().joinpath(*parts).resolve()
    if not p.exists():
        raise DataMissing(f"data file not found: {p} (set DIVCON_DATA or --data-dir to the folder holding the sets)")
    return p


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def gsm8k(split: str) -> list[Example]:
    return _gsm8k(_file("gsm8k", f"{split}.jsonl"), split)


@lru_cache(maxsize=None)
def _gsm8k(path: Path, split: str) -> list[Example]:
    out = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f):
            d = json.loads(line)
            gold = d["answer"].split("####")[-1].strip().replace(",", "")
            out.append(Example(f"gsm8k-{split}-{i}", d["question"], [gold], meta={"solution": d["answer"]}))
    return out


_DROP_RE = re.compile(r"^Passage: (?P<p>.*)\nQuestion: (?P<q>.*)\nAnswer:\s*$", re.S)


def drop_dev() -> list[Example]:
    return _drop(_file("drop", "drop_v0_dev.jsonl.gz"))


@lru_cache(maxsize=None)
def _drop(path: Path) -> list[Example]:
    out = []
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for i, line in enumerate(f):
            d = json.loads(line)
            m = _DROP_RE.match(d["context"])
            if not m:
                raise ValueError(f"DROP record {i} does not have the Passage/Question/Answer layout")
            golds = [g.strip() for g in d["ref_text"].split("|") if g.strip()]
            out.append(Example(f"drop-{i}", m["q"].strip(), golds, context=m["p"].strip()))
    return out


def hash_part(examples: list[Example], part: str, key=lambda e: e.question, fraction: float = 0.5) -> list[Example]:
    """A seeded-by-content split into ``distill`` and ``eval`` parts: an example's side depends only on sha256 of its
    key, so the split is stable across machines and versions, and the two parts never overlap."""
    if part not in ("distill", "eval"):
        raise ValueError(f"part must be 'distill' or 'eval', not {part!r}")
    cut = int(fraction * 2**32)
    keep = part == "distill"
    return [e for e in examples if (int(hashlib.sha256(key(e).encode("utf-8")).hexdigest()[:8], 16) < cut) == keep]


def drop_split(part: str) -> list[Example]:
    """DROP has no train split here: the dev file is split by *passage*, so no passage is in both parts. ``distill``
    (about half the passages) may be used for teacher traces; ``eval`` is held out."""
    return hash_part(drop_dev(), part, key=lambda e: e.context or "")


def json_qa(*parts: str) -> list[Example]:
    """The {question, answer} JSON lists: Bamboogle, HotpotQA, 2Wiki, MuSiQue."""
    return _json_qa(_file(*parts), parts[0])


@lru_cache(maxsize=None)
def _json_qa(path: Path, name: str) -> list[Example]:
    data = json.loads(path.read_text(encoding="utf-8"))
    return [Example(f"{name}-{i}", d["question"].strip(), [str(d["answer"]).strip()]) for i, d in enumerate(data)]


def svamp() -> list[Example]:
    return _svamp(_file("svamp", "SVAMP.json"))


@lru_cache(maxsize=None)
def _svamp(path: Path) -> list[Example]:
    data = json.loads(path.read_text(encoding="utf-8"))
    return [Example(f"svamp-{d['ID']}", f"{d['Body'].strip()} {d['Question'].strip()}", [_fmt(d["Answer"])])
            for d in data]


def multiarith() -> list[Example]:
    return _multiarith(_file("multiarith", "MultiArith.json"))


@lru_cache(maxsize=None)
def _multiarith(path: Path) -> list[Example]:
    data = json.loads(path.read_text(encoding="utf-8"))
    return [Example(f"multiarith-{d['iIndex']}", d["sQuestion"].strip(), [_fmt(d["lSolutions"][0])]) for d in data]


def asdiv() -> list[Example]:
    return _asdiv(_file("asdiv", "ASDiv.xml"))


@lru_cache(maxsize=None)
def _asdiv(path: Path) -> list[Example]:
    root = ET.parse(path).getroot()
    out = []
    for p in root.iter("Problem"):
        ans = p.findtext("Answer", "").split("(")[0].strip()
        if not re.fullmatch(r"-?[\d.,/]+", ans):  # ASDiv also has yes/no and unit answers: numeric ones only
            continue
        q = f"{p.findtext('Body', '').strip()} {p.findtext('Question', '').strip()}"
        out.append(Example(f"asdiv-{p.get('ID')}", q, [ans]))
    return out
