"""Every prompt divcon sends, per task family. One place, so the teacher, the students and the training sets built
for distillation all see exactly the same instructions (a student is trained on the prompt it is later served).

Families: ``math`` (numeric answer), ``reading`` (answer from a passage, DROP), ``openqa`` (closed-book multi-hop).
"""

from __future__ import annotations

import re

ANSWER_FORM = {
    "math": "The answer is <number>.",
    "reading": "The answer is <short answer: a number, date or span from the passage>.",
    "openqa": "The answer is <short answer>.",
}

NO_DECOMPOSITION = "No decomposition needed."


def _problem(question: str, context: str | None) -> str:
    if context:
        return f"Passage: {context}\n\nQuestion: {question}"
    return f"Problem: {question}"


def decompose_messages(question: str, context: str | None, family: str, max_subquestions: int = 4) -> list[dict]:
    """The decomposer's prompt: subquestions only, never their answers."""
    return [
        {"role": "system", "content": "You break problems into simpler subquestions. You never answer them."},
        {"role": "user", "content": (
            f"{_problem(question, context)}\n\n"
            f"Write the subquestions one must answer, in order, to solve this. Write at most {max_subquestions}, "
            "one per line, numbered 1., 2., ... Each subquestion ends with a question mark. The last subquestion asks "
            "for exactly what the question asks. Do not answer them. "
            f"If the question is simple enough to answer directly, write only: {NO_DECOMPOSITION}"
        )},
    ]


def format_subquestions(subquestions: list[str]) -> str:
    """The decomposer's target text as students learn it; the inverse of :func:`parse_subquestions`."""
    if not subquestions:
        return NO_DECOMPOSITION
    return "\n".join(f"{i}. {q}" for i, q in enumerate(subquestions, 1))


_NUMBERING = re.compile(r"^\s*(?:[-*•]\s*|(?:sub-?question|q)?\s*\d+\s*[.):]\s*|(?:sub-?question|q)\s*\d*\s*:\s*)",
                        re.IGNORECASE)


def parse_subquestions(text: str, max_subquestions: int = 4) -> list[str]:
    """Subquestions from a decomposer's output: numbered or bulleted lines ending in '?'. Anything else (preamble,
    answers the model added anyway) is ignored; duplicates dropped; at most ``max_subquestions`` kept."""
    out: list[str] = []
    for line in (text or "").splitlines():
        q = _NUMBERING.sub("", line).strip().strip("*").strip()
        if q.endswith("?") and len(q) > 3 and q not in out:
            out.append(q)
    return out[:max_subquestions]


def solve_messages(question: str, context: str | None, family: str, subquestions: list[str] | None) -> list[dict]:
    """The solver's prompt: answer the given subquestions in order, in one generation, then the final answer."""
    if subquestions:
        sq = "\n".join(f"{i}. {q}" for i, q in enumerate(subquestions, 1))
        # The question is restated after the subquestions: small solvers otherwise stop at the last subquestion and
        # give its answer as the final one.
        instruction = (f"Subquestions:\n{sq}\n\nAnswer the subquestions in order, one by one. Then use those "
                       f"answers to answer the original question: {question}\n"
                       f"End with a final line of the form: {ANSWER_FORM[family]}")
    else:
        instruction = f"Solve it step by step. End with a final line of the form: {ANSWER_FORM[family]}"
    return [
        {"role": "system", "content": "You are a careful problem solver."},
        {"role": "user", "content": f"{_problem(question, context)}\n\n{instruction}"},
    ]


def direct_messages(question: str, context: str | None, family: str) -> list[dict]:
    """Single-stage without reasoning: only the answer."""
    return [
        {"role": "system", "content": "You are a careful problem solver."},
        {"role": "user", "content": f"{_problem(question, context)}\n\nGive only the final answer, in the form: "
                                    f"{ANSWER_FORM[family]}"},
    ]


def _history(pairs: list[tuple[str, str]]) -> str:
    if not pairs:
        return "No subquestions have been asked yet."
    return "\n".join(f"Subquestion {i}: {q}\nAnswer {i}: {a}" for i, (q, a) in enumerate(pairs, 1))


DONE = "DONE"


def next_subquestion_messages(question: str, context: str | None, family: str,
                              pairs: list[tuple[str, str]]) -> list[dict]:
    """Dynamic (self-ask style) decomposer turn: the next subquestion given the answers so far, or DONE."""
    return [
        {"role": "system", "content": "You break problems into simpler subquestions, one at a time."},
        {"role": "user", "content": (
            f"{_problem(question, context)}\n\nSo far:\n{_history(pairs)}\n\n"
            "Write the single next subquestion needed to solve the problem, ending with a question mark. "
            f"If the answers so far are enough to solve it, write only: {DONE}"
        )},
    ]


def answer_subquestion_messages(question: str, context: str | None, family: str,
                                pairs: list[tuple[str, str]], subquestion: str) -> list[dict]:
    """Dynamic solver turn: a short answer to one subquestion."""
    return [
        {"role": "system", "content": "You are a careful problem solver."},
        {"role": "user", "content": (
            f"{_problem(question, context)}\n\nSo far:\n{_history(pairs)}\n\n"
            f"Answer this subquestion in one or two sentences: {subquestion}"
        )},
    ]


def final_messages(question: str, context: str | None, family: str, pairs: list[tuple[str, str]]) -> list[dict]:
    """Dynamic solver's closing turn: the final answer from the subquestion answers."""
    return [
        {"role": "system", "content": "You are a careful problem solver."},
        {"role": "user", "content": (
            f"{_problem(question, context)}\n\nSubquestions and their answers:\n{_history(pairs)}\n\n"
            f"Use those answers to answer the original question: {question}\n"
            f"End with a final line of the form: {ANSWER_FORM[family]}"
        )},
    ]


def fingerprint() -> str:
    """A short hash of every prompt, rendered on a fixed probe. Run configs record it, so resuming a run after the
    prompts changed is refused instead of silently mixing records made with two different prompts."""
    import hashlib
    import json

    q, ctx, pairs = "Q?", "C.", [("S?", "A.")]
    rendered = []
    for family in ANSWER_FORM:
        for c in (None, ctx):
            rendered += [decompose_messages(q, c, family), solve_messages(q, c, family, ["S?"]),
                         solve_messages(q, c, family, None), direct_messages(q, c, family),
                         next_subquestion_messages(q, c, family, pairs),
                         answer_subquestion_messages(q, c, family, pairs, "S?"), final_messages(q, c, family, pairs)]
    blob = json.dumps(rendered, sort_keys=True) + format_subquestions(["S?"]) + NO_DECOMPOSITION + DONE
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:12]
