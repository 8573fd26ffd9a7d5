"""Every model call goes to SQLite (prompt, params, output, usage, time), and the log doubles as a cache.

The cache key is (model identity, prompt, sampling params incl. seed), so re-running a command is free, an interrupted
run resumes where it stopped, and two experiment cells that share a stage compute it once. Sampled calls differ by
seed. The identity (:mod:`divcon.backends.identity`) holds the digests of the weight files, so a model or adapter
replaced at the same path is a cache miss, never a stale hit; the ``model`` column keeps the spec for people.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from pathlib import Path

from divcon.backends.base import ChatRequest, Generation

SCHEMA = """
CREATE TABLE IF NOT EXISTS calls (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL,
    ts REAL NOT NULL,
    model TEXT NOT NULL,
    prompt TEXT NOT NULL,
    params TEXT NOT NULL,
    output TEXT NOT NULL,
    tokens_in INTEGER NOT NULL,
    tokens_out INTEGER NOT NULL,
    seconds REAL NOT NULL,
    finish_reason TEXT NOT NULL,
    hits INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX IF NOT EXISTS calls_key ON calls(key);
CREATE INDEX IF NOT EXISTS calls_model ON calls(model);
CREATE TABLE IF NOT EXISTS file_digests (
    path TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    ctime_ns INTEGER NOT NULL,
    inode INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    PRIMARY KEY (path, size, mtime_ns, ctime_ns, inode)
);
"""


def call_key(identity: str, req: ChatRequest) -> str:
    blob = json.dumps([identity, req.message_dicts(), req.params()], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class CallLog:
    """A small SQLite store; WAL mode so a reader (a report, another process) never blocks a running eval."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self.db = sqlite3.connect(str(self.path), check_same_thread=False, timeout=60)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.executescript(SCHEMA)

    def get(self, identity: str, model: str, req: ChatRequest) -> Generation | None:
        """The logged answer of the model with this identity to this request, or None. ``model`` (the spec) is
        what the returned generation is labelled with."""
        key = call_key(identity, req)
        with self._lock:
            row = self.db.execute(
                "SELECT output, tokens_in, tokens_out, seconds, finish_reason FROM calls WHERE key=?", (key,)
            ).fetchone()
            if row is None:
                return None
            self.db.execute("UPDATE calls SET hits = hits + 1 WHERE key=?", (key,))
            self.db.commit()
        return Generation(text=row[0], tokens_in=row[1], tokens_out=row[2], seconds=row[3], model=model,
                          cached=True, finish_reason=row[4])

    def put(self, identity: str, model: str, req: ChatRequest, gen: Generation) -> None:
        with self._lock:
            self.db.execute(
                "INSERT OR REPLACE INTO calls (key, ts, model, prompt, params, output, tokens_in, tokens_out, seconds,"
                " finish_reason) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (call_key(identity, req), time.time(), model, req.prompt_json(), json.dumps(req.params()), gen.text,
                 gen.tokens_in, gen.tokens_out, gen.seconds, gen.finish_reason),
            )
            self.db.commit()  # committed per call: a crash loses at most the call in flight

    def count(self, model: str | None = None) -> int:
        with self._lock:
            if model is None:
                return self.db.execute("SELECT COUNT(*) FROM calls").fetchone()[0]
            return self.db.execute("SELECT COUNT(*) FROM calls WHERE model=?", (model,)).fetchone()[0]

    def known_digest(self, path: str, size: int, mtime_ns: int, ctime_ns: int, inode: int) -> str | None:
        with self._lock:
            row = self.db.execute("SELECT sha256 FROM file_digests WHERE path=? AND size=? AND mtime_ns=? AND "
                                  "ctime_ns=? AND inode=?", (path, size, mtime_ns, ctime_ns, inode)).fetchone()
        return row[0] if row else None

    def remember_digest(self, path: str, size: int, mtime_ns: int, ctime_ns: int, inode: int, sha256: str) -> None:
        with self._lock:
            self.db.execute("DELETE FROM file_digests WHERE path=?", (path,))
            self.db.execute("INSERT INTO file_digests VALUES (?,?,?,?,?,?)",
                            (path, size, mtime_ns, ctime_ns, inode, sha256))
            self.db.commit()

    def close(self) -> None:
        self.db.close()
