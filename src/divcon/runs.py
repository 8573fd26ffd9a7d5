"""Run directories: config.json (what was run), records.jsonl (one line per example, appended and fsynced as each
finishes), summary.json (recomputed from the records). A killed run restarted with the same command continues where
it stopped, with no duplicate and no lost record; a torn last line from a crash is dropped and redone."""

from __future__ import annotations

import json
import os
from pathlib import Path


class ConfigMismatch(RuntimeError):
    """The run directory holds a run with a different configuration."""


def write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def open_run(run_dir: Path, config: dict) -> None:
    """Create the run dir, or check that an existing one was started with the same config."""
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg_path = run_dir / "config.json"
    if cfg_path.exists():
        old = json.loads(cfg_path.read_text(encoding="utf-8"))
        diff = {k for k in set(old) | set(config) if old.get(k) != config.get(k)}
        if diff:
            raise ConfigMismatch(f"{run_dir} holds a run with a different config (differs in: {', '.join(sorted(diff))});"
                                 " use another --out or delete it")
    else:
        write_json(cfg_path, config)


def read_records(run_dir: Path, repair: bool = False) -> list[dict]:
    """All complete records. With ``repair``, a torn trailing line (crash mid-write) is cut off the file."""
    path = run_dir / "records.jsonl"
    if not path.exists():
        return []
    raw = path.read_bytes()
    records, good_end, pos = [], 0, 0
    for line in raw.splitlines(keepends=True):
        pos += len(line)
        if not line.endswith(b"\n"):
            break
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            break
        good_end = pos
    if repair and good_end < len(raw):
        with open(path, "r+b") as f:
            f.truncate(good_end)
    return records


class RecordWriter:
    def __init__(self, run_dir: Path):
        self.f = open(run_dir / "records.jsonl", "a", encoding="utf-8")

    def write(self, record: dict) -> None:
        self.f.write(json.dumps(record, ensure_ascii=False) + "\n")
        self.f.flush()
        os.fsync(self.f.fileno())

    def close(self) -> None:
        self.f.close()

    def __enter__(self) -> "RecordWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
