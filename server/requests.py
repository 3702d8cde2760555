"""What every API's request shares: sampling, the search loop's knobs, messages, and how a field is refused.

Each API's own request and reply types live beside its renderer and routes
(:mod:`research.server.chat`, :mod:`research.server.completions`,
:mod:`research.server.responses`), as vLLM splits its OpenAI server. For each request,
OpenAI's fields first, then one marked block of our extensions. We are lenient where OpenAI is:
``null`` means the default, and fields that change nothing here (``service_tier``,
``prompt_cache_key``, ...) are accepted and ignored. What a server-side search loop
truly cannot do (function ``tools`` but on ReCall models, a non-text ``response_format``, ``echo``)
is a 400 that names the field (``param``) and says why, with code ``unsupported_parameter``.
Unknown fields are a 400, as on api.openai.com. ``openai_compat.md`` lists every field;
``tests/server/test_compat_doc.py`` checks it against these models.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from research.http_errors import Text
from research.wire import MAX_K, SearchMode

MAX_MESSAGES = 1024
"""Most messages (or input items) one request may carry."""
MAX_LOGIT_BIAS = 300
"""Most ``logit_bias`` entries (OpenAI's limit)."""
MAX_STOP = 4
"""Most stop strings (OpenAI's limit)."""
MAX_STOP_CHARS = 256
"""Longest stop string."""
MAX_STOP_TOKENS = 64
"""Most ``stop_token_ids``."""
MAX_TOP_LOGPROBS = 20
"""Most alternatives listed per token (OpenAI's limit)."""

ReasoningFormat = Literal["parsed", "raw"]
ReasoningEffort = Literal["none", "minimal", "low", "medium", "high", "xhigh"]

EFFORT_SEARCHES: dict[str, int | None] = {"none": 0, "minimal": 1, "low": 2, "medium": 4, "high": 8, "xhigh": None}
"""``reasoning_effort`` (chat) / ``reasoning.effort`` (responses) as a search budget; None: the server's."""


def unsupported(why: str) -> PydanticCustomError:
    """A 400 for a field we cannot honour (``param`` is the field, ``code`` unsupported_parameter)."""
    return PydanticCustomError("unsupported_parameter", why)


def reject_if_set(reasons: dict[str, str]) -> Any:
    """A field validator refusing a truthy value of each named field, with that field's reason."""

    def check(cls: type, value: Any, info: ValidationInfo) -> Any:
        if value:
            raise unsupported(reasons[info.field_name])
        return value

    return field_validator(*reasons)(classmethod(check))


class Strict(BaseModel):
    """Unknown fields are a 400, as on api.openai.com."""

    model_config = ConfigDict(extra="forbid")


class TextPart(Strict):
    type: Literal["text", "input_text", "output_text"]
    text: Text
    annotations: list[Any] | None = None


Role = Literal["system", "developer", "user", "assistant", "tool"]


class FunctionCall(Strict):
    name: Text
    arguments: Text
    """A JSON object, as text."""


class MessageToolCall(Strict):
    """A call of one of the client's functions in an assistant message (what a ``tool_calls`` reply held)."""

    id: Text
    type: Literal["function"] = "function"
    function: FunctionCall


class FunctionDef(Strict):
    name: Text = Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    description: Text | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class FunctionTool(Strict):
    """One of the client's own functions (chat ``tools``): the model may call it, the client runs it."""

    type: Literal["function"]
    function: FunctionDef

    def schema(self) -> dict[str, Any]:
        """The tool as the model's prompt lists it: OpenAI's key order, unset fields and ``strict`` (a flag of the
        API, not part of the function) left out."""
        return self.model_dump(exclude_none=True, exclude={"function": {"strict"}})


class Message(Strict):
    """A chat message. Assistant messages may carry everything our replies carry, so the
    usual loop (append the reply to ``messages``, ask again) works unchanged."""

    role: Role
    content: Text | list[TextPart] | None = None
    name: str | None = None
    refusal: str | None = None
    tool_calls: list[MessageToolCall] | None = None
    tool_call_id: Text | None = None
    """A ``tool`` message's: the call it answers."""
    function_call: None = None
    audio: None = None
    annotations: list[Any] | None = None
    # Our replies' extensions (ignored when the prompt is rendered).
    reasoning: str | None = None
    reasoning_content: str | None = None
    answer: str | None = None
    searches: list[Any] | None = None
    citations: list[Any] | None = None

    @property
    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content)
        return self.content or ""


class StreamOptions(Strict):
    include_usage: bool | None = False
    include_obfuscation: bool | None = None
    continuous_usage_stats: bool | None = False


class SamplingFields(Strict):
    """Sampling and the search loop's knobs, shared by all three APIs; each says where its budget is."""

    model: str
    stream: bool | None = False
    temperature: float | None = Field(None, ge=0.0, le=2.0, description="default 1.0")
    top_p: float | None = Field(None, gt=0.0, le=1.0, description="default 1.0")
    seed: int | None = Field(None, ge=-(2**63), lt=2**63, description="a 64-bit integer")
    user: str | None = None
    metadata: dict[str, str] | None = None
    service_tier: str | None = None
    store: bool | None = None
    prompt_cache_key: str | None = None
    safety_identifier: str | None = None
    # -- extensions (openai_compat.md) --
    top_k: int | None = Field(None, lt=2**31, description="vLLM's sampling top-k: -1 or 0 disables it")
    min_p: float | None = Field(None, ge=0.0, le=1.0, description="vLLM's min-p sampling (0 disables it)")
    repetition_penalty: float | None = Field(
        None, gt=0.0, le=1e38, description="vLLM's repetition penalty (1 disables it; at most 1e38, a float32)"
    )
    max_searches: int | None = Field(None, ge=0, description="searches allowed in this response")
    search_top_k: int | None = Field(None, ge=1, le=MAX_K, description="passages per search (server default)")
    search_mode: SearchMode | None = Field(None, description="vector (default), fts or hybrid")

    @field_validator("top_k")
    @classmethod
    def _top_k(cls, v: int | None) -> int | None:
        if v is not None and v < -1:
            raise ValueError("top_k must be -1 or 0 (disabled) or at least 1")
        return v

    @property
    @abstractmethod
    def token_budget(self) -> int | None:
        """The response's token budget as asked (None: the server's)."""

    @property
    @abstractmethod
    def budget_param(self) -> str:
        """The field that set :attr:`token_budget` (named in errors)."""

    @property
    @abstractmethod
    def prompt_param(self) -> str:
        """The field that holds the prompt (named in errors)."""

    @property
    def effort(self) -> ReasoningEffort | None:
        """The reasoning effort asked for: a search budget (:data:`EFFORT_SEARCHES`)."""
        return None

    @property
    def raw(self) -> bool:
        """All text is content, tags visible (no reasoning split)."""
        return False

    @property
    def client_tools(self) -> list[str]:
        """The names of the client's own functions the model may call (chat ``tools``, ReCall models only)."""
        return []

    @property
    def shows_reasoning(self) -> bool:
        """The reasoning is sent, apart from the content."""
        return not self.raw

    @property
    def choices(self) -> int:
        """Choices to generate (``n``), each its own search loop."""
        return 1

    @property
    def stop_strings(self) -> list[str]:
        """The client's stop strings."""
        return []

    @property
    def stop_ids(self) -> list[int]:
        """The client's stop tokens."""
        return []

    @property
    def include_stop(self) -> bool:
        """A stop string that ended the response stays in its text."""
        return False

    @property
    def listed_logprobs(self) -> int | None:
        """None: no log-probabilities; else how many of the most likely tokens to list beside each token's."""
        return None

    @property
    def wants_token_ids(self) -> bool:
        """The reply carries the token ids, the inserted mask (and, with logprobs, each token's log-probability)."""
        return False


class CompletionFields(SamplingFields):
    """Fields of chat and text completions."""

    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(None, ge=1)
    n: int | None = Field(None, ge=1, description="choices, each its own search loop (at most the server's --max-n)")
    stop: str | list[str] | None = Field(None, description="at most 4 strings of at most 256 characters")
    presence_penalty: float | None = Field(None, ge=-2.0, le=2.0, description="over the model's tokens, default 0")
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0, description="over the model's tokens, default 0")
    logit_bias: dict[str, float] | None = Field(None, description="token id -> bias in [-100, 100], at most 300")
    # -- extensions (vLLM's) --
    stop_token_ids: list[int] | None = Field(None, max_length=MAX_STOP_TOKENS, description="tokens that end the reply")
    include_stop_str_in_output: bool | None = Field(None, description="keep the stop string that ended the reply")
    return_token_ids: bool | None = Field(None, description="token ids, the inserted mask and token logprobs")

    @field_validator("stop")
    @classmethod
    def _stop(cls, v: str | list[str] | None) -> str | list[str] | None:
        strings = [v] if isinstance(v, str) else v or []
        if len(strings) > MAX_STOP:
            raise ValueError(f"stop may hold at most {MAX_STOP} strings, not {len(strings)}")
        for s in strings:
            if not 0 < len(s) <= MAX_STOP_CHARS:
                raise ValueError(f"each stop string must have 1 to {MAX_STOP_CHARS} characters, not {len(s)}")
        return v

    @property
    def stop_strings(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

    @property
    def stop_ids(self) -> list[int]:
        return list(self.stop_token_ids or [])

    @property
    def include_stop(self) -> bool:
        return bool(self.include_stop_str_in_output)

    @property
    def choices(self) -> int:
        return self.n or 1

    @property
    def wants_token_ids(self) -> bool:
        return bool(self.return_token_ids)

    @field_validator("logit_bias")
    @classmethod
    def _logit_bias(cls, v: dict[str, float] | None) -> dict[str, float] | None:
        if v is None:
            return v
        if len(v) > MAX_LOGIT_BIAS:
            raise ValueError(f"logit_bias may hold at most {MAX_LOGIT_BIAS} tokens, not {len(v)}")
        for token, bias in v.items():
            if not token.isdigit() or not token.isascii():
                raise ValueError(f"logit_bias keys are token ids (digits), not {token[:40]!r}")
            if not -100 <= bias <= 100:
                raise ValueError(f"logit_bias values must be in [-100, 100], not {bias} (token {token})")
        return v

    @property
    def token_bias(self) -> dict[int, float] | None:
        """``logit_bias`` keyed by token id."""
        return {int(token): bias for token, bias in self.logit_bias.items()} if self.logit_bias else None

    @property
    def include_usage(self) -> bool:
        """A stream ends with a chunk holding the usage (``stream_options.include_usage``)."""
        return bool(self.stream_options and self.stream_options.include_usage)
