"""Where divcon reads data and keeps its caches. Every location can be moved with an environment variable so that
tests, CI and users with their own layout never need to edit code."""

from __future__ import annotations

import os
from pathlib import Path


def data_dir() -> Path:
    """The shared data sets: $DIVCON_DATA, else ../shared/data next to the checkout or the working directory."""
    env = os.environ.get("DIVCON_DATA")
    if env:
        return Path(env)
    candidates = [Path.cwd() / "../shared/data", Path(__file__).resolve().parents[2] / "../shared/data"]
    for c in candidates:
        if c.is_dir():
            return c.resolve()
    return candidates[0].resolve()


def cache_dir() -> Path:
    """Assembled model files and converted HF folders: $DIVCON_CACHE, else ~/.cache/divcon."""
    return Path(os.environ.get("DIVCON_CACHE", Path.home() / ".cache" / "divcon"))


def call_log_path() -> Path:
    """The SQLite call log and cache shared by every run: $DIVCON_DB, else <cache>/calls.sqlite."""
    return Path(os.environ.get("DIVCON_DB", cache_dir() / "calls.sqlite"))
