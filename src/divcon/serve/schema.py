"""The part of an OpenAI chat completion request that divcon reads. Other fields clients commonly send (``user``,
``temperature``, ``stream_options`` ...) are accepted and ignored: the served pipeline's config decides sampling.

How a request becomes a question: the last ``user`` message is the question; a passage, for a question about one,
comes in the request's ``divcon`` field (``{"divcon": {"context": "..."}}``; with the ``openai`` client,
``extra_body={"divcon": {"context": ...}}``). System messages and earlier turns are not sent to the models: the
pipeline writes its own prompts, the ones its decomposer was trained on.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Message(BaseModel):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | None = None  # null in an assistant turn that only called tools


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt option must not be silently ignored

    context: str | None = Field(None, description="A passage the question is about.")


class ChatCompletionRequest(BaseModel):
    model: str
    messages: list[Message] = Field(min_length=1)
    stream: bool = False
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)  # the newer name of max_tokens; wins when both are given
    n: Literal[1] = 1  # one pipeline run gives one answer
    divcon: Options | None = None

    @property
    def token_budget(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    def question(self) -> str | None:
        """The last user message, or None when there is none."""
        users = [m.content for m in self.messages if m.role == "user"]
        return users[-1] if users else None
