"""Run directories: config.json (what was run), records.jsonl (one line per example, appended and fsynced as each
finishes), summary.json (recomputed from the records).

What a run dir promises, and how:
- one writer at a time: :class:`RunLock` takes an exclusive ``flock`` on ``<run>/.lock`` (released by the kernel
  when the process dies, even on kill -9); a second writer gets :class:`RunDirBusy` naming the holder's pid;
- no lost record: a torn *last* line (crash mid-write) is cut off and redone; a bad line anywhere else is moved,
  with its line number, to ``records.rejected.jsonl`` and reported, never silently dropped with what follows it;
- no duplicated record: reading keeps the first record of each key (id, sample), and a repairing read rewrites a
  file that holds duplicates (left by an older divcon without the lock).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from pathlib import Path
from typing import IO

log = logging.getLogger("divcon")

RECORDS = "records.jsonl"
REJECTED = "records.rejected.jsonl"


class ConfigMismatch(RuntimeError):
    """The run directory holds a run with a different configuration."""


class RunDirBusy(RuntimeError):
    """Another process is writing to the run directory."""


def write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


class RunLock:
    """An exclusive lock on a run dir for the life of one writer. ``flock`` (not a pid file) so a crashed writer
    never leaves a stale lock behind; the pid written into the file is only there to name the holder."""

    def __init__(self, run_dir: Path):
        run_dir.mkdir(parents=True, exist_ok=True)
        self.path = run_dir / ".lock"
        self.f: IO[str] | None = open(self.path, "a+", encoding="utf-8")
        try:
            fcntl.flock(self.f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.f.seek(0)
            holder = self.f.read().strip() or "?"
            self.f.close()
            self.f = None
            raise RunDirBusy(f"run dir {run_dir} is in use by pid {holder}; wait for it to finish or use another "
                             "--out") from None
        self.f.seek(0)
        self.f.truncate()
        self.f.write(str(os.getpid()))
        self.f.flush()

    def release(self) -> None:
        if self.f is not None:
            fcntl.flock(self.f, fcntl.LOCK_UN)
            self.f.close()
            self.f = None

    def __enter__(self) -> "RunLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


NARROWED = ("pipeline",)  # compared only on the settings the new config names (divcon.pipeline.settings_of)


def same_value(key: str, old: object, new: object) -> bool:
    """Whether a stored config value matches the new one. A ``pipeline`` entry is compared on the settings the new
    config records, which are those its mode uses: a run dir written when every setting was recorded resumes under
    a setting its mode never reads, while a setting it does read, missing or different, still refuses."""
    if key in NARROWED and isinstance(old, dict) and isinstance(new, dict):
        return all(k in old and old[k] == v for k, v in new.items())
    return old == new


def check_config(run_dir: Path, config: dict, ignore: tuple[str, ...] = ()) -> dict | None:
    """Refuse a run dir that was started with another config; return its config (None for a new run dir). Keys in
    ``ignore`` are for display only (a spec as the user typed it); what they stand for is compared through other keys
    (the resolved model identity)."""
    cfg_path = run_dir / "config.json"
    if not cfg_path.exists():
        return None
    old = json.loads(cfg_path.read_text(encoding="utf-8"))
    if "models" in config and "models" not in old:  # made before model identities: compare the specs as typed
        ignore = ("models",)
    diff = {k for k in set(old) | set(config) if k not in ignore and not same_value(k, old.get(k), config.get(k))}
    if diff:
        raise ConfigMismatch(f"{run_dir} holds a run with a different config (differs in: {', '.join(sorted(diff))});"
                             " use another --out or delete it")
    return old


def open_run(run_dir: Path, config: dict, ignore: tuple[str, ...] = ()) -> RunLock:
    """Lock the run dir, then create it or check that it was started with the same config. The caller releases
    the returned lock (it is a context manager) when it has written its last record."""
    lock = RunLock(run_dir)
    try:
        old = check_config(run_dir, config, ignore)
        if old is None:
            write_json(run_dir / "config.json", config)
        elif "models" in config and "models" not in old:  # an older run dir: record its identities from now on
            write_json(run_dir / "config.json", {**old, "models": config["models"]})
    except BaseException:
        lock.release()
        raise
    return lock


def record_key(rec: dict) -> tuple:
    """What makes a record unique in its file: the example id, and the sample number in a traces dir."""
    return rec.get("id"), rec.get("sample")


def read_records(run_dir: Path, repair: bool = False) -> list[dict]:
    """The complete records of a run, each key once (the first written wins).

    A torn last line (no newline: the process died mid-write) is not a record. Any other line that is not a JSON
    object is reported with its line number and skipped. With ``repair`` (only the lock holder may repair), the
    torn tail is cut off, bad lines are appended to ``records.rejected.jsonl`` with their line numbers, and a file
    with bad lines or duplicates is rewritten atomically without them.
    """
    path = run_dir / RECORDS
    if not path.exists():
        return []
    raw = path.read_bytes()
    lines = raw.splitlines(keepends=True)
    torn = len(lines[-1]) if lines and not lines[-1].endswith(b"\n") else 0  # bytes of a half-written last line
    if torn:
        lines = lines[:-1]
    records: list[dict] = []
    keep: list[bytes] = []
    bad: list[tuple[int, bytes]] = []
    seen: set[tuple] = set()
    duplicates = 0
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            if not isinstance(rec, dict) or "id" not in rec:
                raise ValueError("not a record")
        except ValueError:
            bad.append((lineno, line))
            continue
        key = record_key(rec)
        if key in seen:
            duplicates += 1
            continue
        seen.add(key)
        records.append(rec)
        keep.append(line)
    for lineno, _ in bad:
        log.warning("%s line %d is not a valid record; %s", path, lineno,
                    f"moved to {REJECTED}" if repair else f"skipped (a resumed run moves it to {REJECTED})")
    if duplicates:
        log.warning("%s holds %d duplicate record(s); %s", path, duplicates,
                    "the file was rewritten without them" if repair else "each id is counted once")
    if repair:
        if bad:
            with open(run_dir / REJECTED, "a", encoding="utf-8") as f:
                for lineno, line in bad:
                    f.write(json.dumps({"line": lineno, "text": line.decode("utf-8", "replace")}) + "\n")
        if bad or duplicates:
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_bytes(b"".join(keep))
            os.replace(tmp, path)
        elif torn:
            with open(path, "r+b") as f:
                f.truncate(len(raw) - torn)
    return records


class RecordWriter:
    def __init__(self, run_dir: Path):
        self.f = open(run_dir / RECORDS, "a", encoding="utf-8")

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
