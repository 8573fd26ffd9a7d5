"""Every prompt divcon sends, per task family. One place, so the teacher, the students and the training sets built
for distillation all see exactly the same instructions (a student is trained on the prompt it is later served).

Families: ``math`` (numeric answer), ``reading`` (answer from a passage, DROP), ``openqa`` (closed-book multi-hop).
"""

from __future__ import annotations

import re

from divcon.demos import demos

ANSWER_FORM = {
    "math": "The answer is <number>.",
    "reading": "The answer is <short answer: a number, date or span from the passage>.",
    "openqa": "The answer is <short answer>.",
}

# What "working" means per family: the solver shows it for each subquestion, so decomposing does not remove the
# reasoning that a step-by-step solution would have written (the zero-shot solver stated bare results and skipped
# the arithmetic).
WORKING = {
    "math": "write out every calculation (for example: 2 customers x 2 DVDs = 4 DVDs)",
    "reading": "quote the facts from the passage it uses and write out any calculation",
    "openqa": "state the fact it rests on",
}

# What each subquestion should ask for (decompose_style "computed"): a 1.5B decomposer otherwise often restates the
# problem's givens as subquestions ("How many candy bars does Jen buy?"), which carry no step of the solution.
SUBQUESTION_KIND = {
    "math": "Each subquestion asks for a number that has to be calculated, never for one the problem already states.",
    "reading": "Each subquestion asks for one fact from the passage or one calculation with such facts.",
    "openqa": "Each subquestion asks for one fact.",
}
DECOMPOSE_STYLES = ("plain", "computed")

NO_DECOMPOSITION = "No decomposition needed."
SOLVE_STYLES = ("working", "short", "plan")
"""How the solver uses the subquestions: ``working`` answers each with its working, ``short`` with a short answer
(the original zero-shot prompt), ``plan`` reads them as a plan and writes one step-by-step solution."""

SYSTEM_SOLVE = "You are a careful problem solver."
SYSTEM_DECOMPOSE = "You break problems into simpler subquestions. You never answer them."


def _problem(question: str, context: str | None) -> str:
    if context:
        return f"Passage: {context}\n\nQuestion: {question}"
    return f"Problem: {question}"


def _few_shot(system: str, shots: int, family: str, turn, final_user: str) -> list[dict]:
    """System prompt, then ``shots`` demonstrations as (user, assistant) turns, then the question. The demonstrations
    depend only on the family and the prompt variant, never on the question, so every question of a run shares them
    as one fixed prefix whose KV cache an engine can reuse."""
    msgs = [{"role": "system", "content": system}]
    for d in demos(family)[:shots]:
        user, assistant = turn(d)
        msgs += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    return msgs + [{"role": "user", "content": final_user}]


def _decompose_instruction(max_subquestions: int, family: str, style: str) -> str:
    kind = f"{SUBQUESTION_KIND[family]} " if style == "computed" else ""
    return (f"Write the subquestions one must answer, in order, to solve this. Write at most {max_subquestions}, "
            f"one per line, numbered 1., 2., ... Each subquestion ends with a question mark. {kind}The last "
            "subquestion asks for exactly what the question asks. Do not answer them. "
            f"If the question is simple enough to answer directly, write only: {NO_DECOMPOSITION}")


def decompose_messages(question: str, context: str | None, family: str, max_subquestions: int = 4,
                       shots: int = 0, style: str = "plain") -> list[dict]:
    """The decomposer's prompt: subquestions only, never their answers. A trained student decomposer is served with
    ``shots=0``: the prompt it was trained on."""
    if style not in DECOMPOSE_STYLES:
        raise ValueError(f"unknown decompose style {style!r}; styles: {', '.join(DECOMPOSE_STYLES)}")
    instruction = _decompose_instruction(max_subquestions, family, style)

    def turn(d: dict) -> tuple[str, str]:
        return (f"{_problem(d['question'], d.get('context'))}\n\n{instruction}",
                format_subquestions(d["subquestions"][:max_subquestions]))

    return _few_shot(SYSTEM_DECOMPOSE, shots, family, turn, f"{_problem(question, context)}\n\n{instruction}")


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


def final_line(family: str, answer: str) -> str:
    """'The answer is 72.' (one full stop, also after an answer that ends in one, like 'Inc.')."""
    return ANSWER_FORM[family].split("<")[0] + answer.rstrip(".") + "."


def _solve_instruction(question: str, family: str, subquestions: list[str] | None, style: str) -> str:
    if not subquestions:
        return f"Solve it step by step. End with a final line of the form: {ANSWER_FORM[family]}"
    sq = "\n".join(f"{i}. {q}" for i, q in enumerate(subquestions, 1))
    # The question is restated after the subquestions: small solvers otherwise stop at the last subquestion and give
    # its answer as the final one.
    if style == "plan":
        return (f"Plan:\n{sq}\n\nSolve the problem step by step, following the plan; {WORKING[family]}. "
                f"End with a final line of the form: {ANSWER_FORM[family]}")
    how = (f"Answer each one in order: write the subquestion, then its answer; {WORKING[family]}."
           if style == "working" else "Answer the subquestions in order, one by one.")
    return (f"Subquestions:\n{sq}\n\n{how} Then use those answers to answer the original question: {question}\n"
            f"End with a final line of the form: {ANSWER_FORM[family]}")


def _solution(d: dict, family: str, subquestions: list[str] | None, style: str) -> str:
    """A demonstration's answer as the solver should write it under ``style``."""
    if not subquestions or style == "plan":
        body = d["steps"]
    else:
        body = "\n".join(f"{i}. {q} {a}" for i, (q, a) in enumerate(zip(subquestions, d[style]), 1))
    return f"{body}\n{final_line(family, d['answer'])}"


def solve_messages(question: str, context: str | None, family: str, subquestions: list[str] | None,
                   shots: int = 0, style: str = "short") -> list[dict]:
    """The solver's prompt: with subquestions, answer them (``style``) and then the question, in one generation;
    without, solve step by step (single-stage CoT, and the two-stage route when the decomposer wrote none)."""
    if style not in SOLVE_STYLES:
        raise ValueError(f"unknown solve style {style!r}; styles: {', '.join(SOLVE_STYLES)}")
    staged = bool(subquestions)

    def turn(d: dict) -> tuple[str, str]:
        subs = d["subquestions"] if staged else None
        instruction = _solve_instruction(d["question"], family, subs, style)
        return (f"{_problem(d['question'], d.get('context'))}\n\n{instruction}",
                _solution(d, family, subs, style))

    return _few_shot(SYSTEM_SOLVE, shots, family, turn,
                     f"{_problem(question, context)}\n\n{_solve_instruction(question, family, subquestions, style)}")


def direct_messages(question: str, context: str | None, family: str, shots: int = 0) -> list[dict]:
    """Single-stage without reasoning: only the answer."""
    instruction = f"Give only the final answer, in the form: {ANSWER_FORM[family]}"
    return _few_shot(SYSTEM_SOLVE, shots, family,
                     lambda d: (f"{_problem(d['question'], d.get('context'))}\n\n{instruction}",
                                final_line(family, d["answer"])),
                     f"{_problem(question, context)}\n\n{instruction}")


ROUTES = ("direct", "decompose")


def route_messages(question: str, context: str | None, family: str) -> list[dict]:
    """``auto`` mode's first call: does this question need decomposing? One word back."""
    return [
        {"role": "system", "content": "You decide how a problem is best solved."},
        {"role": "user", "content": (
            f"{_problem(question, context)}\n\nShould this be broken into simpler subquestions before it is solved, "
            "or is it simple enough to solve directly, step by step? Answer with one word: decompose or direct.")},
    ]


def parse_route(text: str) -> str:
    """'direct' when the answer's first word says so; 'decompose' otherwise (an unclear answer takes the two-stage
    route, the mode auto stands in for)."""
    words = re.findall(r"[a-z]+", (text or "").lower())
    return "direct" if words[:1] == ["direct"] else "decompose"


def _history(pairs: list[tuple[str, str]]) -> str:
    if not pairs:
        return "No subquestions have been asked yet."
    return "\n".join(f"Subquestion {i}: {q}\nAnswer {i}: {a}" for i, (q, a) in enumerate(pairs, 1))


DONE = "DONE"

# Dynamic (self-ask style) turns. Their demonstrations are the same worked examples cut at one point: the state after
# the first subquestion was answered (for the next subquestion and for answering it) and the full history (for the
# closing answer, and DONE). Answers carry their working, as in the two-stage solver's ``working`` style, so the
# comparison of static and dynamic decomposition is between equally good prompts.


def _pairs(d: dict, k: int) -> list[tuple[str, str]]:
    return list(zip(d["subquestions"], d["working"]))[:k]


def _next_instruction() -> str:
    return ("Write the single next subquestion needed to solve the problem, ending with a question mark. "
            f"If the answers so far are enough to solve it, write only: {DONE}")


def next_subquestion_messages(question: str, context: str | None, family: str,
                              pairs: list[tuple[str, str]], shots: int = 0) -> list[dict]:
    """Dynamic decomposer turn: the next subquestion given the answers so far, or DONE."""
    def user(q: str, c: str | None, p: list[tuple[str, str]]) -> str:
        return f"{_problem(q, c)}\n\nSo far:\n{_history(p)}\n\n{_next_instruction()}"

    def turn(d: dict) -> tuple[str, str]:
        return user(d["question"], d.get("context"), _pairs(d, 1)), d["subquestions"][1]

    msgs = _few_shot("You break problems into simpler subquestions, one at a time.", shots, family, turn,
                     user(question, context, pairs))
    if shots:  # one demonstration of stopping: the first example with its whole history
        d = demos(family)[0]
        msgs[-1:-1] = [{"role": "user", "content": user(d["question"], d.get("context"), _pairs(d, 99))},
                       {"role": "assistant", "content": DONE}]
    return msgs


def answer_subquestion_messages(question: str, context: str | None, family: str,
                                pairs: list[tuple[str, str]], subquestion: str, shots: int = 0) -> list[dict]:
    """Dynamic solver turn: one subquestion's answer, with its working."""
    def user(q: str, c: str | None, p: list[tuple[str, str]], s: str) -> str:
        return (f"{_problem(q, c)}\n\nSo far:\n{_history(p)}\n\n"
                f"Answer this subquestion in one or two sentences; {WORKING[family]}: {s}")

    return _few_shot(SYSTEM_SOLVE, shots, family,
                     lambda d: (user(d["question"], d.get("context"), _pairs(d, 1), d["subquestions"][1]),
                                d["working"][1]),
                     user(question, context, pairs, subquestion))


def final_messages(question: str, context: str | None, family: str, pairs: list[tuple[str, str]],
                   shots: int = 0) -> list[dict]:
    """Dynamic solver's closing turn: the final answer from the subquestion answers."""
    def user(q: str, c: str | None, p: list[tuple[str, str]]) -> str:
        return (f"{_problem(q, c)}\n\nSubquestions and their answers:\n{_history(p)}\n\n"
                f"Use those answers to answer the original question: {q}\n"
                f"End with a final line of the form: {ANSWER_FORM[family]}")

    return _few_shot(SYSTEM_SOLVE, shots, family,
                     lambda d: (user(d["question"], d.get("context"), _pairs(d, 99)), final_line(family, d["answer"])),
                     user(question, context, pairs))
