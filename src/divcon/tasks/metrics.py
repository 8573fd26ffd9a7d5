"""Metrics: numeric exact match (GSM8K and friends), official-style DROP EM/F1, SQuAD-style EM for open QA.

DROP follows the official ``drop_eval.py`` (AllenNLP ``allennlp_rc/eval``, copied by simple-evals) token by token:
split on spaces and hyphens, then lower-case, strip punctuation unless the token is a number, normalise numbers
('1,000'/'1000.0'/'12%' -> '1000.0'/'1000.0'/'12.0'), drop articles, fix whitespace; bag-of-words F1 with number
matching, best over every gold answer. Multi-span alignment uses the Hungarian assignment from scipy as the official
script does. F1 is on a 0-1 scale as in AllenNLP (simple-evals multiplies it by 100).
"""

from __future__ import annotations

import re
import string

import numpy as np
from scipy.optimize import linear_sum_assignment

from divcon.tasks.answers import all_numbers, parse_number


def numbers_equal(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return False
    return abs(a - b) <= 1e-6 * max(1.0, abs(b))


def numeric_em(pred: str | None, golds: list[str]) -> float:
    p = parse_number(pred)
    return float(any(numbers_equal(p, parse_number(g)) for g in golds))


def numeric_lenient(output: str, golds: list[str]) -> float:
    """The paper's lenient scoring: any number anywhere in the output equal to the gold counts as correct."""
    nums = all_numbers(output or "")
    return float(any(numbers_equal(n, parse_number(g)) for g in golds for n in nums))


# ---- DROP (official style) ----
_EXCLUDE = set(string.punctuation)


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _normalize_number(token: str) -> str:
    return str(float(token)) if _is_number(token) else token


def _remove_punc(token: str) -> str:
    """Punctuation goes unless the token already reads as a number ('3.5' keeps its point)."""
    return token if _is_number(token) else "".join(ch for ch in token if ch not in _EXCLUDE)


def _normalize_token(token: str) -> str:
    """One token, in the official order: lower -> remove punctuation -> number -> articles -> whitespace.

    Numbers are normalised *after* punctuation removal, so '12%', '1,', '$1,000' and '(5)' become numbers, and
    '2,5' becomes 25 and '1,000.5' becomes 10005, as the official script scores them. That is also how '1,000'
    equals '1000': there is no separate thousands-separator rule."""
    token = _normalize_number(_remove_punc(token.lower()))
    return " ".join(re.sub(r"\b(a|an|the)\b", " ", token).split())


def drop_normalize(text: str) -> str:
    """The official ``_normalize_answer``: tokens split on spaces and hyphens, each normalised, empties dropped."""
    parts = [_normalize_token(t) for t in re.split(" |-", text)]
    return " ".join(p for p in parts if p.strip()).strip()


def _bags(answer: str | list[str]) -> tuple[list[str], list[set[str]]]:
    spans = answer if isinstance(answer, (list, tuple)) else [answer]
    norm = [drop_normalize(s) for s in spans]
    return norm, [set(n.split()) for n in norm]


def _bag_f1(pred: set[str], gold: set[str]) -> float:
    inter = len(gold & pred)
    precision = 1.0 if not pred else inter / len(pred)
    recall = 1.0 if not gold else inter / len(gold)
    if precision == 0 and recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


def _numbers_match(gold: set[str], pred: set[str]) -> bool:
    gold_nums = {w for w in gold if _is_number(w)}
    pred_nums = {w for w in pred if _is_number(w)}
    return not gold_nums or bool(gold_nums & pred_nums)


def _align(pred_bags: list[set[str]], gold_bags: list[set[str]]) -> np.ndarray:
    scores = np.zeros((len(gold_bags), len(pred_bags)))
    for g, gb in enumerate(gold_bags):
        for p, pb in enumerate(pred_bags):
            if _numbers_match(gb, pb):
                scores[g, p] = _bag_f1(pb, gb)
    rows, cols = linear_sum_assignment(-scores)
    best = np.zeros(max(len(gold_bags), len(pred_bags)))
    for r, c in zip(rows, cols):
        best[r] = max(best[r], scores[r, c])
    return best


def drop_em_f1(pred: str | list[str] | None, gold: str | list[str]) -> tuple[float, float]:
    """EM and F1 of one prediction against one gold answer (a span or a list of spans)."""
    if pred is None or (isinstance(pred, str) and not pred.strip()):
        return 0.0, 0.0
    p_norm, p_bags = _bags(pred)
    g_norm, g_bags = _bags(gold)
    em = float(set(p_norm) == set(g_norm) and len(p_norm) == len(g_norm))
    f1 = float(np.mean(_align(p_bags, g_bags)))
    return em, round(f1, 2)


def drop_score(pred: str | None, golds: list[str]) -> dict[str, float]:
    """Max EM and max F1 over all gold answers (DROP's validated answers)."""
    pairs = [drop_em_f1(pred, g) for g in golds if g.strip()]
    if not pairs:
        return {"em": 0.0, "f1": 0.0}
    return {"em": max(p[0] for p in pairs), "f1": max(p[1] for p in pairs)}


# ---- open QA (SQuAD normalisation) ----
def squad_normalize(text: str) -> str:
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _EXCLUDE)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def open_em(pred: str | None, golds: list[str]) -> float:
    if not pred:
        return 0.0
    p = squad_normalize(pred)
    return float(any(p == squad_normalize(g) for g in golds))


def open_lenient(output: str, golds: list[str]) -> float:
    """The paper's lenient accuracy: a normalised gold answer contained in the normalised output."""
    o = squad_normalize(output or "")
    return float(any(squad_normalize(g) and squad_normalize(g) in o for g in golds))


# ---- multiple choice (AQuA): golds = [the correct letter, that option's text] ----
_PLAIN_NUMBER_RE = re.compile(r"\s*-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?\s*")


def choice_acc(pred: str | None, golds: list[str]) -> float:
    """1 when the answer is the correct letter, or exactly the correct option's text: numerically when that option
    is a plain number (so "13.5" matches "13.50", but "5" does not match "5(√3 + 1)"), else after SQuAD
    normalisation. Only the correct option is compared, so a value that is some other option's scores 0."""
    if not pred:
        return 0.0
    letter, option = golds[0], golds[1] if len(golds) > 1 else ""
    if pred.strip() in ("A", "B", "C", "D", "E"):  # a letter, not any substring of "ABCDE"
        return float(pred.strip() == letter)
    if _PLAIN_NUMBER_RE.fullmatch(option):
        return float(_PLAIN_NUMBER_RE.fullmatch(pred) is not None and numbers_equal(parse_number(pred),
                                                                                 parse_number(option)))
    return float(bool(option) and squad_normalize(pred) == squad_normalize(option))


def choice_lenient(output: str, golds: list[str]) -> float:
    """Lenient extra: "(<correct letter>)" anywhere in the output, or the correct option's value anywhere in it."""
    option = golds[1] if len(golds) > 1 else ""
    if f"({golds[0]})" in (output or ""):
        return 1.0
    if _PLAIN_NUMBER_RE.fullmatch(option):
        return numeric_lenient(output, [option])
    return open_lenient(output, [option]) if option else 0.0
