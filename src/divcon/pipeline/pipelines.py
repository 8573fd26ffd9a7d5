"""The ways to answer a question, as strategy objects behind one interface: single-stage (direct / step by step),
two-stage static (decompose, then solve in one generation), dynamic (self-ask style: subquestion, answer, next
subquestion ...), and routed (``auto``: ask first whether to decompose, then one of the first two).

``run(..., on_text=f)`` streams the answer: the one generation whose text becomes ``final_output`` (single-stage's
answer, the two-stage solver's, dynamic's closing answer, the chosen route's) goes through the backend's streaming
path, handing its text to ``f`` as it is generated; every other call (decomposition, routing, dynamic's rounds) runs
as usual before it. The result is the same as without ``on_text``: same calls, same call-log keys, same usage."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, replace

from divcon.backends import ChatRequest, Generation, LoggedBackend, OnText, stream_one
from divcon.pipeline import prompts as P
from divcon.pipeline.result import PipelineResult
from divcon.tasks.base import Example

MODES = ("direct", "cot", "two-stage", "dynamic", "auto")
STAGED_MODES = ("two-stage", "dynamic", "auto")  # the modes with a decomposer


@dataclass
class PipelineConfig:
    mode: str = "two-stage"
    max_subquestions: int = 4
    decompose_tokens: int = 192
    solve_tokens: int = 512
    direct_tokens: int = 48
    route_tokens: int = 8  # auto: the one-word routing answer
    step_tokens: int = 128  # dynamic: one subquestion or one intermediate answer
    max_rounds: int = 4
    temperature: float = 0.0  # sampling of the first generation (the decomposer's, or single-stage's) for teacher
    # data with several samples; the two-stage solver stays greedy
    seed: int = 0
    # Prompt settings; None means the family's tuned value (TUNED below, applied by for_family).
    shots: int | None = None  # worked examples before the question in the solver's prompts (at most a family's)
    decompose_shots: int | None = None  # the same for the decomposer's; 0 for a trained student (it learned the format)
    solve_style: str | None = None  # how the solver uses the subquestions: prompts.SOLVE_STYLES
    decompose_style: str = "plain"  # "computed": subquestions ask for values to calculate (prompts.SUBQUESTION_KIND)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown mode {self.mode!r}; modes: {', '.join(MODES)}")
        if self.decompose_style not in P.DECOMPOSE_STYLES:
            raise ValueError(f"unknown decompose_style {self.decompose_style!r}; styles: "
                             f"{', '.join(P.DECOMPOSE_STYLES)}")
        if self.solve_style is not None and self.solve_style not in P.SOLVE_STYLES:
            raise ValueError(f"unknown solve_style {self.solve_style!r}; styles: {', '.join(P.SOLVE_STYLES)}")
        if min(self.shots or 0, self.decompose_shots or 0) < 0:
            raise ValueError("shots and decompose_shots must be >= 0")


# The prompt settings each task family was tuned to, on dev splits only (README, Prompts). Math, on GSM8K dev
# (reports/prompts, n=150, paired): reading the subquestions as the plan of one step-by-step solution beat answering
# each with its working (+0.067 [-0.007, +0.140]), and worked examples did not pay for their tokens with the 1.5B
# teacher. Reading, on DROP dev (reports/prompts_drop, n=150): without demonstrations two-stage fell far behind CoT
# 2-shot (F1 -0.22, n=60), with two (they teach the short answer span DROP scores) it is on par (+0.026); `plan` and
# `working` tie (+0.001 [-0.074, +0.077] paired) and `plan` spends 8% fewer tokens. Families with no dev ablation yet
# (open QA) take math's values.
TUNED: dict[str, dict] = {"math": {"shots": 0, "decompose_shots": 0, "solve_style": "plan"},
                          "reading": {"shots": 2, "decompose_shots": 2, "solve_style": "plan"}}


def for_family(config: PipelineConfig, family: str) -> PipelineConfig:
    """``config`` with every prompt setting left at None replaced by ``family``'s tuned value; what a strategy runs
    with and what a run dir records, so a record always says which prompts made it."""
    tuned = TUNED.get(family, TUNED["math"])
    return replace(config, **{k: v for k, v in tuned.items() if getattr(config, k) is None})


class Strategy:
    """One way to answer one question. Each question runs through its strategy on its own (no batch-wide stage
    barrier), so a runner can keep many questions in flight and each finishes as soon as its own calls do."""

    mode: str = ""
    settings: tuple[str, ...] = ()  # the PipelineConfig fields this strategy's calls depend on (see settings_of)

    def __init__(self, config: PipelineConfig, solver: LoggedBackend, decomposer: LoggedBackend,
                 borrowed: Mapping[str, Generation] | None = None):
        self.config = config
        self.solver = solver
        self.decomposer = decomposer
        self.borrowed = borrowed or {}  # question id -> its decomposition, made by another run (pipeline.borrowed)

    def _req(self, messages: list[dict], max_tokens: int, sample: bool = False,
             stop: tuple[str, ...] = ()) -> ChatRequest:
        c = self.config
        return ChatRequest.of(messages, max_tokens=max_tokens, temperature=c.temperature if sample else 0.0,
                              seed=c.seed if sample else 0, stop=stop)

    def _call(self, backend: LoggedBackend, request: ChatRequest, on_text: OnText | None = None) -> Generation:
        """One call; with ``on_text``, streamed (only ever the call that writes the final output)."""
        if on_text is None:
            return backend.generate([request])[0]
        return stream_one(backend, request, on_text)

    def run(self, ex: Example, family: str, on_text: OnText | None = None) -> PipelineResult:
        """Answer one question; ``on_text`` receives the final output's text as it is generated (module docstring)."""
        raise NotImplementedError


class SingleStage(Strategy):
    """One model answers directly (``direct``) or step by step (``cot``)."""

    settings = ("shots", "direct_tokens", "solve_tokens", "temperature", "seed")

    def run(self, ex: Example, family: str, on_text: OnText | None = None) -> PipelineResult:
        c = self.config
        if c.mode in ("cot", "auto"):  # auto: the question was routed here
            req = self._req(P.solve_messages(ex.question, ex.context, family, None, c.shots), c.solve_tokens,
                            sample=True)
        else:
            req = self._req(P.direct_messages(ex.question, ex.context, family, c.shots), c.direct_tokens)
        gen = self._call(self.solver, req, on_text)
        r = PipelineResult(mode=c.mode, outputs={"solve": gen.text}, final_output=gen.text)
        r.record("solve", gen)
        return r


class TwoStage(Strategy):
    """Static two-stage: the decomposer writes the subquestions, the solver answers them and the question in one
    generation."""

    # the fields the decomposer's request depends on: a run borrowing decompositions must match them (pipeline.borrowed)
    decompose_settings = ("max_subquestions", "decompose_tokens", "decompose_shots", "decompose_style", "temperature",
                          "seed")
    settings = decompose_settings + ("solve_tokens", "shots", "solve_style")

    def decompose(self, ex: Example, family: str) -> tuple[list[str], Generation]:
        """Subquestions (possibly none) with the raw generation; shared by eval and distillation."""
        c = self.config
        gen = self.borrowed.get(ex.id)
        if gen is None:
            req = self._req(P.decompose_messages(ex.question, ex.context, family, c.max_subquestions,
                                                 c.decompose_shots, c.decompose_style), c.decompose_tokens, sample=True)
            gen = self._call(self.decomposer, req)
        return P.parse_subquestions(gen.text, c.max_subquestions), gen

    def run(self, ex: Example, family: str, on_text: OnText | None = None) -> PipelineResult:
        c = self.config
        subs, dgen = self.decompose(ex, family)
        sgen = self._call(self.solver, self._req(
            P.solve_messages(ex.question, ex.context, family, subs, c.shots, c.solve_style), c.solve_tokens), on_text)
        r = PipelineResult(mode="two-stage", subquestions=subs,
                           outputs={"decompose": dgen.text, "solve": sgen.text}, final_output=sgen.text)
        r.record("decompose", dgen)
        r.record("solve", sgen)
        return r


class Dynamic(Strategy):
    """Self-ask style: rounds of (next subquestion, its answer), then one closing answer. The cost baseline."""

    settings = ("max_rounds", "step_tokens", "decompose_shots", "temperature", "seed", "solve_tokens", "shots")

    def run(self, ex: Example, family: str, on_text: OnText | None = None) -> PipelineResult:
        c = self.config
        r = PipelineResult(mode="dynamic")
        pairs: list[tuple[str, str]] = []
        transcript: list[str] = []
        for _ in range(c.max_rounds):
            gen = self._call(self.decomposer, self._req(
                P.next_subquestion_messages(ex.question, ex.context, family, pairs, c.decompose_shots), c.step_tokens,
                sample=True, stop=("\n\n",)))
            r.record("decompose", gen)
            transcript.append(f"[decomposer] {gen.text.strip()}")
            subs = P.parse_subquestions(gen.text, 1)
            if not subs or P.DONE in gen.text.split("?")[0] or subs[0] in r.subquestions:
                break
            r.subquestions.append(subs[0])
            gen = self._call(self.solver, self._req(
                P.answer_subquestion_messages(ex.question, ex.context, family, pairs, subs[0], c.shots),
                c.step_tokens))
            r.record("solve", gen)
            pairs.append((subs[0], gen.text.strip()))
            transcript.append(f"[solver] {gen.text.strip()}")
        gen = self._call(self.solver, self._req(P.final_messages(ex.question, ex.context, family, pairs, c.shots),
                                                c.solve_tokens), on_text)  # the rounds are over: only this one streams
        r.record("solve", gen)
        transcript.append(f"[solver] {gen.text.strip()}")
        r.outputs = {"transcript": "\n".join(transcript), "solve": gen.text}
        r.final_output = gen.text
        return r


class Routed(Strategy):
    """``auto``: the decomposer is first asked whether the question needs decomposing (a zero-training router);
    "direct" sends it to the solver's step-by-step prompt, anything else to two-stage. The routing call is logged as
    its own stage, so its cost is counted."""

    settings = ("route_tokens", *dict.fromkeys(SingleStage.settings + TwoStage.settings))

    def run(self, ex: Example, family: str, on_text: OnText | None = None) -> PipelineResult:
        c = self.config
        gen = self._call(self.decomposer, self._req(P.route_messages(ex.question, ex.context, family),
                                                    c.route_tokens))
        route = P.parse_route(gen.text)
        r = (SingleStage if route == "direct" else TwoStage)(c, self.solver, self.decomposer).run(ex, family, on_text)
        r.mode = "auto"
        r.outputs = {"route": gen.text, **r.outputs}
        r.record("route", gen)
        r.usage.insert(0, r.usage.pop())  # route first, in the order the calls were made
        return r


STRATEGIES: dict[str, type[Strategy]] = {"direct": SingleStage, "cot": SingleStage, "two-stage": TwoStage,
                                         "dynamic": Dynamic, "auto": Routed}


STUDENT_ROLES = ("lora", "lora_adapter", "adapter")  # identity files that make a model a fine-tuned student


def _is_student(backend: LoggedBackend) -> bool:
    return any(role in STUDENT_ROLES for role, _ in getattr(getattr(backend, "identity", None), "files", ()))


def bare_for_students(config: PipelineConfig, solver: LoggedBackend, decomposer: LoggedBackend) -> PipelineConfig:
    """A fine-tuned student is served the bare prompt it was trained on: no demonstrations in its own stage
    (``decompose_shots=0`` for a student decomposer, ``shots=0`` for a student solver) unless a value is given,
    whatever its task family's tuned value is for the teacher."""
    bare = {"decompose_shots": 0} if config.decompose_shots is None and _is_student(decomposer) else {}
    if config.shots is None and _is_student(solver):
        bare["shots"] = 0
    return replace(config, **bare)


def settings_of(config: PipelineConfig, family: str) -> dict:
    """The mode and the settings its strategy's calls depend on, as run for ``family``: what a run dir records as its
    pipeline, so that a setting the mode never reads (a solve style for single-stage CoT) neither splits nor blocks a
    resumed run, and a family default that changes does block it."""
    config = for_family(config, family)
    return {"mode": config.mode} | {k: getattr(config, k) for k in STRATEGIES[config.mode].settings}


class Pipeline:
    """A mode's strategy bound to its models: ``run_one`` answers one question, ``run`` a list in order. The
    strategy of a family runs with that family's tuned prompt settings (:func:`for_family`), a student with its bare
    prompt (:func:`bare_for_students`). ``borrowed`` decompositions (by question id, :mod:`divcon.pipeline.borrowed`)
    stand in for the two-stage decomposer's call on their questions."""

    def __init__(self, config: PipelineConfig, solver: LoggedBackend, decomposer: LoggedBackend | None = None,
                 borrowed: Mapping[str, Generation] | None = None):
        self.solver = solver
        self.decomposer = decomposer or solver
        self.config = bare_for_students(config, self.solver, self.decomposer)
        self.borrowed = borrowed or {}
        self._strategies: dict[str, Strategy] = {}

    def strategy(self, family: str) -> Strategy:
        if family not in self._strategies:
            self._strategies[family] = STRATEGIES[self.config.mode](for_family(self.config, family), self.solver,
                                                                    self.decomposer, self.borrowed)
        return self._strategies[family]

    def run_one(self, ex: Example, family: str, on_text: OnText | None = None) -> PipelineResult:
        """Answer one question; with ``on_text``, its final output is streamed to it as it is generated."""
        if not ex.question or not ex.question.strip():
            raise ValueError(f"example {ex.id!r} has an empty question")
        return self.strategy(family).run(ex, family, on_text)

    def run(self, examples: list[Example], family: str) -> list[PipelineResult]:
        return [self.run_one(ex, family) for ex in examples]


class _Recorder:
    """Stands in for both models to record every request a strategy sends, answering each with ``reply``."""

    def __init__(self, reply: str):
        self.reply = reply
        self.sent: list[dict] = []

    def generate(self, requests: list[ChatRequest]) -> list[Generation]:
        self.sent += [{"messages": r.message_dicts(), **r.params()} for r in requests]
        return [Generation(self.reply, 0, 0, 0.0, "probe") for _ in requests]


def prompts_fingerprint(config: PipelineConfig, family: str) -> str:
    """A short hash of every request this configuration sends for a probe question of ``family`` (with and without a
    passage, down every route), recorded in run configs: resuming after those prompts changed is refused instead of
    silently mixing records made with two prompts, while a change to prompts this run never sends leaves it alone."""
    sent = []
    probe = [Example("probe", "Q?", [], context=c) for c in (None, "C.")]
    # "direct" takes auto's single-stage route; the numbered line gives every decomposer one subquestion, which the
    # dynamic loop then sees repeated, so it also reaches its closing turn
    staged = "1. What is S?\nThe answer is 1."
    for reply in ("direct", staged) if config.mode == "auto" else (staged,):
        model = _Recorder(reply)
        for ex in probe:
            STRATEGIES[config.mode](replace(for_family(config, family), seed=0), model, model).run(ex, family)  # type: ignore[arg-type]
        sent += model.sent
    blob = json.dumps([sent, P.format_subquestions(["S?"]), P.NO_DECOMPOSITION, P.DONE, config.mode],
                      sort_keys=True)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:12]
