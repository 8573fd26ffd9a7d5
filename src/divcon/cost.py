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


def _embedded_base(spec: ModelSpec) -> str | None:
    """The embedded model a local spec runs on, by the weights it resolves to: an alias, a GGUF file whose sha256 is
    an embedded model's, or an hf student whose base is one. None when the weights are unknown or gone."""
    from divcon.backends import default_log
    from divcon.backends.identity import resolve_identity

    if spec.kind not in ("llamacpp", "hf"):
        return None
    if spec.kind == "hf":
        meta = Path(spec.name) / "divcon_train.json"
        if meta.exists():
            base = json.loads(meta.read_text(encoding="utf-8")).get("base_alias")
            if base in EMBEDDED:
                return base
    try:
        return resolve_identity(ModelSpec(spec.kind, spec.name), default_log()).alias
    except (OSError, ValueError, RuntimeError, KeyError):
        return None


def _params_of(spec: ModelSpec) -> float | None:
    """Parameter count (billions) of a local model: an explicit option, else the embedded model it runs on."""
    if "params_b" in spec.options:
        return float(spec.options["params_b"])
    base = _embedded_base(spec)
    return EMBEDDED[base].params_b if base else None


def price_of(spec: str, table: dict | None = None) -> Price:
    """The price of a model, looked up by the spec as written, then its canonical form, ``kind:name`` (so
    ``openai:gpt-4o-mini,base_url=...`` is the table's ``openai:gpt-4o-mini``) and the bare name; a local model is
    priced by the parameters of the weights it resolves to. A model with none of these is ``unpriced``: callers
    show it as such and never as $0."""
    table = table or load_table()
    parsed = ModelSpec.parse(spec)
    for key in (spec, str(parsed), f"{parsed.kind}:{parsed.name}", parsed.name):
        if key in table["models"]:
            p = table["models"][key]
            return Price(p["in_per_1k"], p["out_per_1k"], p.get("params_b"), "table")
    params = _params_of(parsed)
    if params is None:
        return Price(0.0, 0.0, None, "unpriced")
    ref = table["reference"]
    scale = params / ref["params_b"]
    return Price(ref["in_per_1k"] * scale, ref["out_per_1k"] * scale, params, "params")
