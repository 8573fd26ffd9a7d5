"""Dollars from token counts. API models are priced from an editable table; local models as the paper priced them,
relative to a reference model: reference price x (parameters / reference parameters)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from divcon.backends.base import ModelSpec
from divcon.backends.registry import EMBEDDED


@dataclass(frozen=True)
class Price:
    in_per_1k: float
    out_per_1k: float
    params_b: float | None  # None when unknown (an API model): it never counts as 'local'
    source: str  # "table" | "params" | "unpriced"

    def dollars(self, tokens_in: int, tokens_out: int) -> float:
        return tokens_in / 1000 * self.in_per_1k + tokens_out / 1000 * self.out_per_1k


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_table(path: str | Path | None = None) -> dict:
    table = json.loads(resources.files("divcon").joinpath("resources/prices.json").read_text())
    path = path or os.environ.get("DIVCON_PRICES")
    if path:
        table = _merge(table, json.loads(Path(path).read_text()))
    return table


def _params_of(spec: ModelSpec) -> float | None:
    """Parameter count (billions) of a local model: embedded alias, hf student built on one, or an explicit option."""
    if "params_b" in spec.options:
        return float(spec.options["params_b"])
    if spec.kind == "llamacpp" and spec.name in EMBEDDED:
        return EMBEDDED[spec.name].params_b
    if spec.kind == "hf":
        meta = Path(spec.name) / "divcon_train.json"
        base = json.loads(meta.read_text()).get("base_alias") if meta.exists() else spec.name
        if base in EMBEDDED:
            return EMBEDDED[base].params_b
    return None


def price_of(spec: str, table: dict | None = None) -> Price:
    table = table or load_table()
    parsed = ModelSpec.parse(spec)
    for key in (spec, str(parsed), parsed.name):
        if key in table["models"]:
            p = table["models"][key]
            return Price(p["in_per_1k"], p["out_per_1k"], p.get("params_b"), "table")
    params = _params_of(parsed)
    if params is None:
        return Price(0.0, 0.0, None, "unpriced")
    ref = table["reference"]
    scale = params / ref["params_b"]
    return Price(ref["in_per_1k"] * scale, ref["out_per_1k"] * scale, params, "params")
