"""The served-model table and the server's limits, from an optional YAML file (``divcon serve --config``).

Each served model name is one pipeline: a mode, a decomposer and a solver spec, a prompt family, and
:class:`~divcon.pipeline.PipelineConfig` settings. Without a config the teacher decomposes and solves, under three
names, one per prompt family::

    concurrency: null      # pipelines running at once (null: what the backends serve at once)
    queue: 32              # requests waiting for a free pipeline; one more is answered 429
    timeout: 600           # seconds a request may take, waiting included, before it is answered 504
    max_body_bytes: 1000000
    max_messages: 64
    max_tokens: 4096       # the most a request's max_tokens may ask for
    models:
      divcon-math:
        mode: two-stage                 # direct | cot (single-stage) | two-stage | dynamic | auto
        decomposer: llamacpp:smollm2-135m,lora=reports/bench_distill/students/sd-r
        solver: llamacpp:qwen2.5-1.5b
        family: math                    # math | reading | openqa
        pipeline: {decompose_shots: 0}  # PipelineConfig fields; a trained student needs no worked examples

A ``models`` mapping replaces the default table whole, so a config serves exactly the names it lists.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from divcon.backends.registry import DEFAULT_TEACHER
from divcon.pipeline import MODES, STAGED_MODES, PipelineConfig
from divcon.pipeline.prompts import ANSWER_FORM

TEACHER = f"llamacpp:{DEFAULT_TEACHER}"
FAMILIES = tuple(ANSWER_FORM)
MODEL_KEYS = {"mode", "decomposer", "solver", "family", "pipeline"}
PIPELINE_KEYS = {f.name for f in fields(PipelineConfig)} - {"mode"}  # the mode has its own key
# served name -> family; "divcon" is the generic one for free-form questions (a short answer, no passage needed)
DEFAULT_MODELS = {"divcon": "openqa", "divcon-math": "math", "divcon-reading": "reading"}


@dataclass(frozen=True)
class ServedModel:
    name: str
    family: str
    solver: str
    decomposer: str | None  # None in the single-stage modes, which have no decomposer
    pipeline: PipelineConfig


@dataclass(frozen=True)
class ServeConfig:
    models: dict[str, ServedModel]
    concurrency: int | None = None
    queue: int = 32
    # a two-stage answer from the embedded teacher on 2 CPU cores takes a minute, longer with every slot busy
    timeout: float = 600.0
    max_body_bytes: int = 1_000_000
    max_messages: int = 64
    max_tokens: int = 4096

    @property
    def specs(self) -> list[str]:
        """Every model spec served, each once, in table order."""
        specs = (s for m in self.models.values() for s in (m.decomposer, m.solver) if s)
        return list(dict.fromkeys(specs))


LIMITS = {"concurrency": "a whole number >= 1 or null", "queue": "a whole number >= 0",
          "timeout": "a number of seconds > 0", "max_body_bytes": "a whole number >= 1",
          "max_messages": "a whole number >= 1", "max_tokens": "a whole number >= 1"}
TOP_KEYS = set(LIMITS) | {"models"}


def served_model(name: str, raw: Any) -> ServedModel:
    """One entry of ``models``; every mistake is a ValueError naming the model and the key."""
    if not isinstance(raw, dict):
        raise ValueError(f"served model {name!r}: expected a mapping of {sorted(MODEL_KEYS)}, got {raw!r}")
    if set(raw) - MODEL_KEYS:
        raise ValueError(f"served model {name!r}: unknown keys {sorted(set(raw) - MODEL_KEYS)}; known: "
                         f"{sorted(MODEL_KEYS)}")
    mode = str(raw.get("mode", "two-stage"))
    if mode not in MODES:
        raise ValueError(f"served model {name!r}: unknown mode {mode!r}; modes: {', '.join(MODES)}")
    family = str(raw.get("family", "openqa"))
    if family not in FAMILIES:
        raise ValueError(f"served model {name!r}: unknown family {family!r}; families: {', '.join(FAMILIES)}")
    settings = raw.get("pipeline") or {}
    if not isinstance(settings, dict) or set(settings) - PIPELINE_KEYS:
        raise ValueError(f"served model {name!r}: pipeline must be a mapping of {sorted(PIPELINE_KEYS)}, got "
                         f"{settings!r}")
    staged = mode in STAGED_MODES
    if not staged and "decomposer" in raw:
        raise ValueError(f"served model {name!r}: mode {mode} has no decomposer")
    solver = raw.get("solver", TEACHER)
    decomposer = raw.get("decomposer", solver) if staged else None
    for role, spec in (("solver", solver), ("decomposer", decomposer)):
        if (role == "solver" or staged) and not (isinstance(spec, str) and spec.strip()):
            raise ValueError(f"served model {name!r}: {role} must be a model spec, got {spec!r}")
    try:
        pipeline = PipelineConfig(mode=mode, **settings)
    except (TypeError, ValueError) as e:
        raise ValueError(f"served model {name!r}: {e}") from None
    return ServedModel(name, family, solver, decomposer, pipeline)


def _limit(key: str, value: Any) -> int | float | None:
    if key == "concurrency" and value is None:
        return None
    if key == "timeout":
        ok = type(value) in (int, float) and value > 0
    else:  # bool is an int to Python, never a count here
        ok = type(value) is int and value >= (0 if key == "queue" else 1)
    if not ok:
        raise ValueError(f"{key} must be {LIMITS[key]}, got {value!r}")
    return value


def parse_config(data: Any) -> ServeConfig:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ValueError(f"a serve config is a mapping of {sorted(TOP_KEYS)}")
    if set(data) - TOP_KEYS:
        raise ValueError(f"unknown keys {sorted(set(data) - TOP_KEYS)}; known: {sorted(TOP_KEYS)}")
    raw_models = data.get("models", {name: {"family": family} for name, family in DEFAULT_MODELS.items()})
    if not isinstance(raw_models, dict) or not raw_models:
        raise ValueError("models must be a non-empty mapping of served model names to pipelines")
    models = {str(name): served_model(str(name), raw) for name, raw in raw_models.items()}
    return ServeConfig(models, **{k: _limit(k, v) for k, v in data.items() if k in LIMITS})


def load_config(path: Path | None) -> ServeConfig:
    """The config at ``path`` (the defaults when None); a ValueError says what is wrong in one line."""
    if path is None:
        return parse_config(None)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ValueError(f"{path} is not valid YAML: {str(e).splitlines()[0]}") from None
    try:
        return parse_config(data)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
