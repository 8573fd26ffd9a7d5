"""Routing: ``--mode auto`` asks the decomposer first and sends the question down one route; its cost is counted."""

from __future__ import annotations

import pytest

from divcon.backends import load_backend, register_backend
from divcon.backends.base import ChatRequest, Generation
from divcon.evaluate import evaluate
from divcon.pipeline import Pipeline, PipelineConfig
from divcon.pipeline import prompts as P
from divcon.tasks.base import Example


class RouterBackend:
    """``route:<answer>``: says ``<answer>`` when asked for a route, writes two subquestions when asked to decompose,
    and solves anything else; remembers which kind of prompt each call was."""

    seen: list[str] = []

    def __init__(self, spec):
        self.spec = str(spec)
        self.answer = self.spec.split(":", 1)[1]

    def generate(self, requests: list[ChatRequest]) -> list[Generation]:
        out = []
        for r in requests:
            system, user = r.messages[0][1], r.messages[-1][1]
            if system == P.route_messages("q", None, "math")[0]["content"]:
                kind, text = "route", self.answer
            elif "subquestions" in system:
                kind, text = "decompose", "1. How many?\n2. How much?"
            else:
                staged = "Subquestions:" in user or "Plan:" in user  # the solve styles introduce them so
                kind = "solve-with-subquestions" if staged else "solve-step-by-step"
                text = "The answer is 18."
            RouterBackend.seen.append(kind)
            out.append(Generation(text=text, tokens_in=50, tokens_out=5, seconds=0.01, model=self.spec))
        return out


@pytest.fixture(autouse=True)
def router():
    register_backend("route", RouterBackend)
    RouterBackend.seen = []


@pytest.mark.parametrize("answer, calls, subquestions", [
    ("direct", ["route", "solve-step-by-step"], []),
    ("Direct.", ["route", "solve-step-by-step"], []),
    ("decompose", ["route", "decompose", "solve-with-subquestions"], ["How many?", "How much?"]),
    ("I am not sure", ["route", "decompose", "solve-with-subquestions"], ["How many?", "How much?"]),
])
def test_auto_sends_the_question_down_the_route_the_decomposer_names(answer, calls, subquestions):
    pipe = Pipeline(PipelineConfig(mode="auto"), solver=load_backend("route:x"),
                    decomposer=load_backend(f"route:{answer}"))
    r = pipe.run_one(Example("q", "How many apples?", ["18"]), "math")
    assert RouterBackend.seen == calls
    assert r.mode == "auto" and r.subquestions == subquestions and r.final_output == "The answer is 18."
    assert [u.stage for u in r.usage] == ["route"] + (["decompose"] if subquestions else []) + ["solve"]
    assert r.usage[0].model == f"route:{answer}" and r.outputs["route"] == answer


def test_auto_runs_through_eval_with_the_routing_cost_counted(tmp_path):
    _, s = evaluate("gsm8k", solver="route:x", decomposer="route:direct", pcfg=PipelineConfig(mode="auto"),
                    split="dev", limit=3, out=tmp_path / "run", concurrency=1)
    assert s["n"] == 3 and s["mode"] == "auto"
    assert s["by_stage"]["route"]["calls"] == 3 and "decompose" not in s["by_stage"]
    assert s["by_model"]["route:direct"]["tokens_in"] == 150


def test_parse_route():
    assert P.parse_route("direct") == "direct" and P.parse_route("  DIRECT, it is simple") == "direct"
    assert P.parse_route("decompose") == "decompose" and P.parse_route("") == "decompose"
    assert P.parse_route("indirect") == "decompose"
