"""The three ways to answer a question: single-stage, two-stage static (decompose, then solve in one generation),
and dynamic (self-ask style: subquestion, answer, next subquestion ...). All work on a batch of examples so that
backends that can parallelise (an OpenAI-compatible server) do; the local backends simply loop."""

from __future__ import annotations

from dataclasses import dataclass

from divcon.backends import ChatRequest, LoggedBackend
from divcon.pipeline import prompts as P
from divcon.pipeline.result import PipelineResult
from divcon.tasks.base import Example

MODES = ("direct", "cot", "two-stage", "dynamic")


@dataclass
class PipelineConfig:
    mode: str = "two-stage"
    max_subquestions: int = 4
    decompose_tokens: int = 192
    solve_tokens: int = 512
    direct_tokens: int = 48
    step_tokens: int = 128  # dynamic: one subquestion or one intermediate answer
    max_rounds: int = 4
    temperature: float = 0.0  # decomposer sampling (teacher data with several samples); the solver stays greedy
    seed: int = 0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown mode {self.mode!r}; modes: {', '.join(MODES)}")


class Pipeline:
    def __init__(self, config: PipelineConfig, solver: LoggedBackend, decomposer: LoggedBackend | None = None):
        self.config = config
        self.solver = solver
        self.decomposer = decomposer or solver

    def run(self, examples: list[Example], family: str) -> list[PipelineResult]:
        for ex in examples:
            if not ex.question or not ex.question.strip():
                raise ValueError(f"example {ex.id!r} has an empty question")
        mode = self.config.mode
        if mode in ("direct", "cot"):
            return self._single(examples, family, step_by_step=mode == "cot")
        if mode == "two-stage":
            return self._two_stage(examples, family)
        return self._dynamic(examples, family)

    def _req(self, messages: list[dict], max_tokens: int, sample: bool = False, stop: tuple[str, ...] = ()) -> ChatRequest:
        c = self.config
        return ChatRequest.of(messages, max_tokens=max_tokens, temperature=c.temperature if sample else 0.0,
                              seed=c.seed if sample else 0, stop=stop)

    def _single(self, examples: list[Example], family: str, step_by_step: bool) -> list[PipelineResult]:
        if step_by_step:
            reqs = [self._req(P.solve_messages(e.question, e.context, family, None), self.config.solve_tokens)
                    for e in examples]
        else:
            reqs = [self._req(P.direct_messages(e.question, e.context, family), self.config.direct_tokens)
                    for e in examples]
        results = []
        for gen in self.solver.generate(reqs):
            r = PipelineResult(mode=self.config.mode, outputs={"solve": gen.text}, final_output=gen.text)
            r.record("solve", gen)
            results.append(r)
        return results

    def decompose(self, examples: list[Example], family: str) -> list[tuple[list[str], object]]:
        """Subquestions for each example (possibly none) with the raw generation; shared by eval and distillation."""
        c = self.config
        reqs = [self._req(P.decompose_messages(e.question, e.context, family, c.max_subquestions),
                          c.decompose_tokens, sample=True) for e in examples]
        gens = self.decomposer.generate(reqs)
        return [(P.parse_subquestions(g.text, c.max_subquestions), g) for g in gens]

    def _two_stage(self, examples: list[Example], family: str) -> list[PipelineResult]:
        decomposed = self.decompose(examples, family)
        reqs = [self._req(P.solve_messages(e.question, e.context, family, subs), self.config.solve_tokens)
                for e, (subs, _) in zip(examples, decomposed)]
        results = []
        for (subs, dgen), sgen in zip(decomposed, self.solver.generate(reqs)):
            r = PipelineResult(mode="two-stage", subquestions=subs,
                               outputs={"decompose": dgen.text, "solve": sgen.text}, final_output=sgen.text)
            r.record("decompose", dgen)
            r.record("solve", sgen)
            results.append(r)
        return results

    def _dynamic(self, examples: list[Example], family: str) -> list[PipelineResult]:
        """Rounds of (next subquestion, its answer) for the whole batch, then one closing answer per example."""
        c = self.config
        results = [PipelineResult(mode="dynamic") for _ in examples]
        pairs: list[list[tuple[str, str]]] = [[] for _ in examples]
        active = list(range(len(examples)))
        transcript = [[] for _ in examples]
        for _ in range(c.max_rounds):
            if not active:
                break
            reqs = [self._req(P.next_subquestion_messages(examples[i].question, examples[i].context, family, pairs[i]),
                              c.step_tokens, sample=True, stop=("\n\n",)) for i in active]
            still = []
            asked = []
            for i, gen in zip(active, self.decomposer.generate(reqs)):
                results[i].record("decompose", gen)
                subs = P.parse_subquestions(gen.text, 1)
                transcript[i].append(f"[decomposer] {gen.text.strip()}")
                if subs and P.DONE not in gen.text.split("?")[0] and subs[0] not in results[i].subquestions:
                    results[i].subquestions.append(subs[0])
                    asked.append((i, subs[0]))
                    still.append(i)
            reqs = [self._req(P.answer_subquestion_messages(examples[i].question, examples[i].context, family,
                                                            pairs[i], q), c.step_tokens) for i, q in asked]
            for (i, q), gen in zip(asked, self.solver.generate(reqs)):
                results[i].record("solve", gen)
                pairs[i].append((q, gen.text.strip()))
                transcript[i].append(f"[solver] {gen.text.strip()}")
            active = still
        reqs = [self._req(P.final_messages(e.question, e.context, family, pairs[i]), c.solve_tokens)
                for i, e in enumerate(examples)]
        for i, gen in enumerate(self.solver.generate(reqs)):
            results[i].record("solve", gen)
            transcript[i].append(f"[solver] {gen.text.strip()}")
            results[i].outputs = {"transcript": "\n".join(transcript[i]), "solve": gen.text}
            results[i].final_output = gen.text
        return results
