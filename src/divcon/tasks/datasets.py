"""Loaders for the offline data sets in ../shared/data (see SOURCES.md there). Each returns a list of Examples.

A file that is not in the expected format raises :class:`DataFormatError` naming the file, the line (JSONL, 1-based)
or record (JSON list, 1-based) and what is wrong, so a damaged or hand-edited copy gives one clear line, not a
traceback from deep inside a loader. Blank lines in JSONL files are skipped.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import xml.etree.ElementTree as ET
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterator

from divcon.paths import data_dir
from divcon.tasks.base import Example


class DataMissing(FileNotFoundError):
    """A data file is not where divcon looks; the message names the path and the override."""


class DataFormatError(ValueError):
    """A data file is malformed or lacks a field; the message names the file and the line or record. A ValueError so
    the CLI, which turns ValueError into a one-line error, needs nothing new."""


def _field(rec: Any, key: str, where: str, kind: type | tuple[type, ...] = str) -> Any:
    """``rec[key]``, checked to be a ``kind``, or a DataFormatError naming ``where`` (file and line/record) and the
    field, instead of a bare KeyError or a TypeError further on."""
    if not isinstance(rec, dict):
        raise DataFormatError(f"{where}: expected a JSON object, got {type(rec).__name__}")
    if key not in rec:
        raise DataFormatError(f"{where}: missing field {key!r}")
    if not isinstance(rec[key], kind):
        raise DataFormatError(f"{where}: field {key!r} has the wrong type ({type(rec[key]).__name__})")
    return rec[key]


def _jsonl(path: Path, opener: Callable = open) -> Iterator[tuple[str, Any]]:
    """(where, record) for each non-blank line of a JSONL file (``opener=gzip.open`` for .jsonl.gz); ``where`` is
    'path: line N' (1-based) for messages."""
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataFormatError(f"{path}: line {n}: not valid JSON ({e.msg}, column {e.colno})") from None
                yield f"{path}: line {n}", rec
    except (UnicodeDecodeError, gzip.BadGzipFile, EOFError) as e:  # not UTF-8; not gzip or cut short
        raise DataFormatError(f"{path}: cannot be read ({e})") from None


def _json_list(path: Path) -> Iterator[tuple[int, str, Any]]:
    """(index, where, record) for each record of a file holding one JSON list; ``where`` is 'path: record N'
    (1-based) for messages, ``index`` the 0-based position the example ids use."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataFormatError(f"{path}: not valid JSON ({e.msg}, line {e.lineno}, column {e.colno})") from None
    except UnicodeDecodeError as e:
        raise DataFormatError(f"{path}: cannot be read ({e})") from None
    if not isinstance(data, list):
        raise DataFormatError(f"{path}: expected a JSON list of records, got {type(data).__name__}")
    for i, rec in enumerate(data):
        yield i, f"{path}: record {i + 1}", rec


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
    for where, d in _jsonl(path):
        question, answer = _field(d, "question", where), _field(d, "answer", where)
        gold = answer.split("####")[-1].strip().replace(",", "")
        out.append(Example(f"gsm8k-{split}-{len(out)}", question, [gold], meta={"solution": answer}))
    return out


GSM8K_DEV_START = 7000


def gsm8k_train(part: str) -> list[Example]:
    """GSM8K's train file in two parts: ``train`` (the first 7000, for teacher traces) and ``dev`` (the other 473,
    for tuning prompts and settings; never traced). Ids keep the line number in train.jsonl."""
    items = gsm8k("train")
    if part not in ("train", "dev"):
        raise ValueError(f"part must be 'train' or 'dev', not {part!r}")
    return items[:GSM8K_DEV_START] if part == "train" else items[GSM8K_DEV_START:]


_DROP_RE = re.compile(r"^Passage: (?P<p>.*)\nQuestion: (?P<q>.*)\nAnswer:\s*$", re.S)


def drop_dev() -> list[Example]:
    return _drop(_file("drop", "drop_v0_dev.jsonl.gz"))


@lru_cache(maxsize=None)
def _drop(path: Path) -> list[Example]:
    out = []
    for where, d in _jsonl(path, gzip.open):
        m = _DROP_RE.match(_field(d, "context", where))
        if not m:
            raise DataFormatError(f"{where}: 'context' does not have the Passage/Question/Answer layout")
        golds = [g.strip() for g in _field(d, "ref_text", where).split("|") if g.strip()]
        out.append(Example(f"drop-{len(out)}", m["q"].strip(), golds, context=m["p"].strip()))
    return out


def hash_part(examples: list[Example], part: str, key=lambda e: e.question, fraction: float = 0.5) -> list[Example]:
    """A seeded-by-content split into ``distill`` and ``eval`` parts: an example's side depends only on sha256 of its
    key, so the split is stable across machines and versions, and the two parts never overlap."""
    if part not in ("distill", "eval"):
        raise ValueError(f"part must be 'distill' or 'eval', not {part!r}")
    cut = int(fraction * 2**32)
    keep = part == "distill"
    return [e for e in examples if (int(hashlib.sha256(key(e).encode("utf-8")).hexdigest()[:8], 16) < cut) == keep]


DROP_DEV_FRACTION = 0.25


def drop_split(part: str) -> list[Example]:
    """DROP has no train split here: the dev file is split by *passage*, so no passage is in two parts. ``eval`` (about
    half the passages) is held out; the other half is cut, in file order, into ``distill`` (its first three quarters
    of passages, for teacher traces) and ``dev`` (the last quarter, for tuning)."""
    if part == "eval":
        return hash_part(drop_dev(), "eval", key=lambda e: e.context or "")
    if part not in ("distill", "dev"):
        raise ValueError(f"part must be 'distill', 'dev' or 'eval', not {part!r}")
    half = hash_part(drop_dev(), "distill", key=lambda e: e.context or "")
    passages = list(dict.fromkeys(e.context for e in half))
    dev = set(passages[int(len(passages) * (1 - DROP_DEV_FRACTION)):])
    return [e for e in half if (e.context in dev) == (part == "dev")]


def json_qa(*parts: str) -> list[Example]:
    """The {question, answer} JSON lists: Bamboogle, HotpotQA, 2Wiki, MuSiQue."""
    return _json_qa(_file(*parts), parts[0])


@lru_cache(maxsize=None)
def _json_qa(path: Path, name: str) -> list[Example]:
    return [Example(f"{name}-{i}", _field(d, "question", where).strip(),
                    [str(_field(d, "answer", where, (str, int, float))).strip()])
            for i, where, d in _json_list(path)]


def svamp() -> list[Example]:
    return _svamp(_file("svamp", "SVAMP.json"))


@lru_cache(maxsize=None)
def _svamp(path: Path) -> list[Example]:
    return [Example(f"svamp-{_field(d, 'ID', where, (str, int))}",
                    f"{_field(d, 'Body', where).strip()} {_field(d, 'Question', where).strip()}",
                    [_fmt(_field(d, "Answer", where, (int, float)))])
            for _, where, d in _json_list(path)]


def multiarith() -> list[Example]:
    return _multiarith(_file("multiarith", "MultiArith.json"))


@lru_cache(maxsize=None)
def _multiarith(path: Path) -> list[Example]:
    out = []
    for _, where, d in _json_list(path):
        solutions = _field(d, "lSolutions", where, list)
        if not solutions or not isinstance(solutions[0], (int, float)):
            raise DataFormatError(f"{where}: field 'lSolutions' does not start with a number")
        index, question = _field(d, "iIndex", where, (int, str)), _field(d, "sQuestion", where)
        out.append(Example(f"multiarith-{index}", question.strip(), [_fmt(solutions[0])]))
    return out


def asdiv() -> list[Example]:
    return _asdiv(_file("asdiv", "ASDiv.xml"))


@lru_cache(maxsize=None)
def _asdiv(path: Path) -> list[Example]:
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:  # its message gives line and column
        raise DataFormatError(f"{path}: not well-formed XML ({e})") from None
    out = []
    for p in root.iter("Problem"):
        ans = p.findtext("Answer", "").split("(")[0].strip()
        if not re.fullmatch(r"-?[\d.,/]+", ans):  # ASDiv also has yes/no and unit answers: numeric ones only
            continue
        q = f"{p.findtext('Body', '').strip()} {p.findtext('Question', '').strip()}"
        out.append(Example(f"asdiv-{p.get('ID')}", q, [ans]))
    return out


def aqua(split: str) -> list[Example]:
    return _aqua(_file("aqua", f"{split}.json"), split)


_AQUA_OPTION_RE = re.compile(r"^(?P<letter>[A-E])\)\s*(?P<text>.*)$", re.S)


@lru_cache(maxsize=None)
def _aqua(path: Path, split: str) -> list[Example]:
    """AQuA-RAT, one JSON object per line: the options are written into the question ("Answer choices: (A) 21 (B)
    ..."), and the golds are the correct letter and that option's text (a model may answer either)."""
    out = []
    for where, d in _jsonl(path):
        options = {}
        for o in _field(d, "options", where, list):
            m = _AQUA_OPTION_RE.match(o.strip()) if isinstance(o, str) else None
            if not m:
                raise DataFormatError(f"{where}: option {o!r} is not '<A-E>)<text>'")
            options[m["letter"]] = m["text"].strip()
        correct = _field(d, "correct", where)
        if correct not in options:
            raise DataFormatError(f"{where}: 'correct' is {correct!r}, not one of the options {sorted(options)}")
        choices = " ".join(f"({k}) {v}" for k, v in options.items())
        question = (f"{_field(d, 'question', where).strip()}\nAnswer choices: {choices}\n"
                    "Answer with the letter of the correct choice.")
        out.append(Example(f"aqua-{split}-{len(out)}", question, [correct, options[correct]],
                           meta={"rationale": d.get("rationale")}))
    return out
