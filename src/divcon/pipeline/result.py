"""What a pipeline returns for one question: enough to score it, audit it and cost it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from divcon.backends.base import Generation, accounting_name


@dataclass
class StageUsage:
    """Usage of one stage (decompose / solve) of one question. ``cached`` is true when every call was replayed from
    the call log: tokens and seconds are still those of the original computation, so a resumed run costs the same."""

    stage: str
    model: str
    tokens_in: int = 0
    tokens_out: int = 0
    seconds: float = 0.0
    calls: int = 0
    cached: bool = True
    prompt_tokens_reused: int = 0  # of tokens_in, served from the engine's prompt (KV) cache, as the engine reports

    def add(self, gen: Generation) -> None:
        self.tokens_in += gen.tokens_in
        self.prompt_tokens_reused += gen.cached_tokens
        self.tokens_out += gen.tokens_out
        self.seconds += gen.seconds
        self.calls += 1
        self.cached = self.cached and gen.cached


@dataclass
class PipelineResult:
    mode: str
    subquestions: list[str] = field(default_factory=list)
    outputs: dict[str, str] = field(default_factory=dict)  # stage -> raw text (dynamic: the whole transcript)
    final_output: str = ""
    usage: list[StageUsage] = field(default_factory=list)
    truncated: bool = False  # some generation hit max_tokens

    def stage(self, name: str, model: str) -> StageUsage:
        for u in self.usage:
            if u.stage == name:
                return u
        u = StageUsage(stage=name, model=model)
        self.usage.append(u)
        return u

    def record(self, stage: str, gen: Generation) -> None:
        self.stage(stage, accounting_name(gen.model)).add(gen)
        self.truncated = self.truncated or gen.finish_reason == "length"

    def to_dict(self) -> dict:
        return asdict(self)
