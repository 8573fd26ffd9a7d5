"""Answer filters: pull the final answer out of a model's free text, and parse numbers strictly.

Strict scoring reads the answer after a marker ("The answer is", "Final answer:", "####", \\boxed{}); without a marker
the last number (math) or the last non-empty line (text) is used and the record says so (``answer_source``), so
a report can tell a model that follows the format from one that merely mentions the right number.
"""

from __future__ import annotations

import re
from fractions import Fraction

_MARKERS = [
    r"the final answer is[:\s]*",
    r"final answer[:\s]*",
    r"the answer is[:\s]*",
    r"answer[:]\s*",
    r"####\s*",
]
_MARKER_RE = re.compile("|".join(_MARKERS), re.IGNORECASE)
_BOXED_RE = re.compile(r"\\boxed\{(?P<ans>[^{}]*)\}")

NUMBER_RE = re.compile(r"-?(?:\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)(?:\s*/\s*\d+)?")


def parse_number(text: str | None) -> float | None:
    """The value of a number written as text: '1,234' -> 1234, '$12.50' -> 12.5, '3/4' -> 0.75, '50%' -> 50.

    Returns None when the text holds no number. Only the first number in ``text`` counts.
    """
    if text is None:
        return None
    m = NUMBER_RE.search(text.replace("\u2212", "-"))
    if not m:
        return None
    s = m.group(0).replace(",", "").replace(" ", "")
    try:
        return float(Fraction(s)) if "/" in s else float(s)
    except (ValueError, ZeroDivisionError):
        return None


def all_numbers(text: str) -> list[float]:
    out = []
    for m in NUMBER_RE.finditer(text.replace("\u2212", "-")):
        v = parse_number(m.group(0))
        if v is not None:
            out.append(v)
    return out


def _clean(ans: str) -> str:
    ans = ans.strip().strip("*").strip()
    ans = re.sub(r"^\$\\boxed\{(.*)\}\$$", r"\1", ans)
    return ans.rstrip(".").strip()


def extract_marked(text: str) -> str | None:
    """The rest of the line after the last answer marker, or the last \\boxed{}; None when there is neither.
    A sentence that follows the answer on the same line ('The answer is 5. Check: ...') is cut off."""
    if not text:
        return None
    candidates: list[tuple[int, str]] = [(m.start(), m.group("ans")) for m in _BOXED_RE.finditer(text)]
    for m in _MARKER_RE.finditer(text):
        rest = text[m.end():].split("\n", 1)[0]
        rest = re.split(r"(?<=[^\d\s.])\.\s|(?<=\d)\.\s(?=[A-Z])", rest, maxsplit=1)[0]
        if rest.strip():
            candidates.append((m.start(), rest))
    if not candidates:
        return None
    return _clean(max(candidates)[1])


def last_marker_end(text: str) -> int | None:
    """Index just past the last answer marker ('The answer is', 'Final answer:', '####' ...), or None."""
    ends = [m.end() for m in _MARKER_RE.finditer(text or "")]
    return ends[-1] if ends else None


def equation_result(ans: str) -> str:
    """The value after the last '=' when ``ans`` is an equation ('10 + 90 = 100' -> '100'), else ``ans`` unchanged.

    Models often write the working into the marked answer ('The answer is 10 + 90 = 100.'); the first number there is
    an operand, not the result. Kept as is when nothing numeric follows the '=' ('x = ?')."""
    if "=" not in ans:
        return ans
    tail = ans.rsplit("=", 1)[1].strip()
    return tail if parse_number(tail) is not None else ans


def extract_math(text: str) -> tuple[str | None, str]:
    """(answer, source) for a numeric task. Source is 'marker', 'last_number' or 'none'. A marked equation gives the
    value after its last '=' (see :func:`equation_result`)."""
    marked = extract_marked(text)
    if marked is not None:
        marked = equation_result(marked)
    if marked is not None and parse_number(marked) is not None:
        return marked, "marker"
    return _last_number(text)


def _last_number(text: str) -> tuple[str | None, str]:
    """The fallback of the numeric filters when no marker gives the answer: the last number written, or none."""
    nums = list(NUMBER_RE.finditer(text or ""))
    if nums:
        return nums[-1].group(0), "last_number"
    return None, "none"


def extract_text(text: str) -> tuple[str | None, str]:
    """(answer, source) for span / open answers. Source is 'marker', 'last_line' or 'none'."""
    marked = extract_marked(text)
    if marked:
        return marked, "marker"
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    if lines:
        return _clean(lines[-1]), "last_line"
    return None, "none"


# a choice letter at the start of a marked answer: "C", "(C)", "C)", "C. 13.6", "option C"; upper case only, so that
# an answer starting with the article "a" is not read as choice A
_CHOICE_RE = re.compile(r"^(?:(?i:option|choice)\s*)?\(?([A-E])\)?(?=$|[\s.:,])")
_PAREN_CHOICE_RE = re.compile(r"\(([A-E])\)")


def extract_choice(text: str) -> tuple[str | None, str]:
    """(answer, source) for a multiple-choice task (AQuA). The marked answer's choice letter if it starts with one;
    else the marked answer itself (a value, for the scorer to compare with the correct option's text; a marked
    equation gives its result). Without a marker: the last "(X)" in the text ('last_choice'), else the last number
    ('last_number')."""
    marked = extract_marked(text)
    if marked:
        m = _CHOICE_RE.match(marked)
        return (m.group(1) if m else equation_result(marked)), "marker"
    letters = _PAREN_CHOICE_RE.findall(text or "")
    if letters:
        return letters[-1], "last_choice"
    return _last_number(text)
