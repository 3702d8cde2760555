"""Request bodies of the OpenAI-compatible API, validated at the boundary.

Fields OpenAI defines and we implement are typed as OpenAI documents them; fields
we cannot honour with a server-side search loop are *rejected* with a message
that says why (never silently dropped); a few that change nothing here are
accepted and ignored. Unknown fields are a 400, as on api.openai.com.
``openai_compat.md`` lists every field.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from research.retrieval.index import SearchMode
from research.retrieval.service import MAX_K

ReasoningFormat = Literal["parsed", "raw"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class Message(_Strict):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] | None = None
    name: str | None = None

    @property
    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content)
        return self.content or ""


class StreamOptions(_Strict):
    include_usage: bool = False
    continuous_usage_stats: bool = False


class ResponseFormat(BaseModel):
    type: str


def _unsupported(name: str, why: str) -> str:
    return f"{name} is not supported by this server: {why}"


class _Generation(_Strict):
    """Fields shared by chat and text completions."""

    model: str
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int = Field(-1, description="vLLM's sampling top-k: -1 or 0 disables it")
    seed: int | None = None
    n: int = 1
    stop: str | list[str] | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: dict[str, float] | None = None
    user: str | None = None
    # Extensions (see openai_compat.md).
    max_searches: int | None = Field(None, ge=0, description="searches allowed in this response")
    search_top_k: int | None = Field(None, ge=1, le=MAX_K, description="passages per search (default 5)")
    search_mode: SearchMode = "vector"

    @field_validator("top_k")
    @classmethod
    def _top_k(cls, v: int) -> int:
        if v < -1:
            raise ValueError("top_k must be -1 or 0 (disabled) or at least 1")
        return v

    @field_validator("n")
    @classmethod
    def _n(cls, v: int) -> int:
        if v != 1:
            raise ValueError("only n=1 is supported: each choice would run its own search loop; send n requests")
        return v

    @model_validator(mode="after")
    def _rejected(self) -> _Generation:
        if self.stop:
            raise ValueError(_unsupported("stop", "the server owns stopping (</search>, EOS)"))
        if self.presence_penalty or self.frequency_penalty:
            raise ValueError(_unsupported("presence_penalty/frequency_penalty", "use temperature, top_p or top_k"))
        if self.logit_bias:
            raise ValueError(_unsupported("logit_bias", "it would bias the search tags too"))
        return self


class ChatCompletionRequest(_Generation):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = None
    tools: list[Any] | None = None
    tool_choice: Any = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    metadata: dict[str, str] | None = None
    store: bool | None = None
    reasoning_format: ReasoningFormat = "parsed"

    @model_validator(mode="after")
    def _chat_rejected(self) -> ChatCompletionRequest:
        if self.tools or self.tool_choice not in (None, "none"):
            raise ValueError(_unsupported("tools", "the server runs its search tool itself"))
        if self.logprobs or self.top_logprobs:
            raise ValueError(_unsupported("logprobs", "responses mix model and retrieved tokens"))
        if self.response_format is not None and self.response_format.type != "text":
            raise ValueError(_unsupported(f"response_format {self.response_format.type!r}", "only text"))
        if not any(m.role == "user" for m in self.messages):
            raise ValueError("messages must contain at least one user message (the question)")
        return self

    @property
    def token_budget(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class CompletionRequest(_Generation):
    prompt: str | list[int] = Field(min_length=1)
    echo: bool = False
    logprobs: int | None = None
    suffix: str | None = None
    best_of: int | None = None

    @model_validator(mode="after")
    def _completion_rejected(self) -> CompletionRequest:
        if self.echo or self.logprobs or self.suffix or (self.best_of or 1) > 1:
            raise ValueError(_unsupported("echo/logprobs/suffix/best_of", "not with a server-side search loop"))
        return self

    @property
    def token_budget(self) -> int | None:
        return self.max_tokens
