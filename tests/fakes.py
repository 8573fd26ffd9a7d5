"""A scripted backend for tests that must not depend on a real model: it answers by prompt kind and counts calls."""

from __future__ import annotations

from collections import Counter

from divcon.backends.base import ChatRequest, Generation, ModelSpec


def is_decompose_prompt(request: ChatRequest) -> bool:
    """Decomposer prompts (static and dynamic) are the ones whose system message speaks of subquestions; the one place
    test doubles tell them from solver prompts, so a prompt rewording breaks them all or none."""
    return "subquestions" in request.messages[0][1]


class ScriptedBackend:
    """``fake:<name>``. Decomposer prompts get ``decompose``, every other prompt gets ``solve`` (with '{n}' replaced
    by the running call number, so outputs can differ)."""

    calls: Counter = Counter()

    def __init__(self, spec: ModelSpec, decompose: str = "1. How many?\n2. How much?",
                 solve: str = "The answer is 18."):
        self.spec = str(spec)
        self.decompose_text = decompose
        self.solve_text = solve

    def generate(self, requests: list[ChatRequest]) -> list[Generation]:
        out = []
        for r in requests:
            is_decompose = is_decompose_prompt(r)
            kind = "decompose" if is_decompose else "solve"
            ScriptedBackend.calls[(self.spec, kind)] += 1
            text = self.decompose_text if is_decompose else self.solve_text
            out.append(Generation(text=text, tokens_in=100, tokens_out=20, seconds=0.01, model=self.spec))
        return out
