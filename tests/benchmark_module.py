"""Load a script under benchmarks/ as a module for its tests: benchmarks are scripts, not a package."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@contextmanager
def loaded_benchmark(name: str) -> Iterator[ModuleType]:
    """``benchmarks/<name>.py`` as the module ``name`` while the block runs. It is in sys.modules meanwhile because
    dataclasses resolve their string annotations through it."""
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    try:
        spec.loader.exec_module(mod)
        yield mod
    finally:
        del sys.modules[name]
