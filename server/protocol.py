"""The API's typed bodies: requests validated at the boundary, and the responses and chunks we send.

The layout follows vLLM's ``entrypoints/openai/protocol.py``: for each request, OpenAI's
fields first, then one marked block of our extensions. We are lenient where OpenAI is:
``null`` means the default, and fields that change nothing here (``service_tier``,
``prompt_cache_key``, ...) are accepted and ignored. What a server-side search loop
truly cannot do (``n > 1``, ``stop``, function ``tools``, logprobs, a non-text
``response_format``) is a 400 that names the field (``param``) and says why, with
code ``unsupported_parameter``. Unknown fields are a 400, as on api.openai.com.
``openai_compat.md`` lists every field; ``tests/server/test_compat_doc.py`` checks it
against these models.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from research.http_errors import Text, check_unicode
from research.wire import MAX_K, Citation, Delta, FinishReason, Search, SearchDelta, SearchMode, Usage

MAX_MESSAGES = 1024
"""Most messages (or input items) one request may carry."""

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


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- requests: pieces ---------------------------------------------------------------------------


class TextPart(_Strict):
    type: Literal["text", "input_text", "output_text"]
    text: Text
    annotations: list[Any] | None = None


class Message(_Strict):
    """A chat message. Assistant messages may carry everything our replies carry, so the
    usual loop (append the reply to ``messages``, ask again) works unchanged."""

    role: Literal["system", "developer", "user", "assistant"]
    content: Text | list[TextPart] | None = None
    name: str | None = None
    refusal: str | None = None
    tool_calls: list[Any] | None = None
    function_call: None = None
    audio: None = None
    annotations: list[Any] | None = None
    # Our replies' extensions (ignored when the prompt is rendered).
    reasoning: str | None = None
    reasoning_content: str | None = None
    answer: str | None = None
    searches: list[Any] | None = None
    citations: list[Any] | None = None

    @field_validator("tool_calls")
    @classmethod
    def _no_tool_calls(cls, v: list[Any] | None) -> list[Any] | None:
        if v:
            raise unsupported("tool calls are not supported: the server runs its search tool itself")
        return v

    @property
    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content)
        return self.content or ""


class StreamOptions(_Strict):
    include_usage: bool | None = False
    include_obfuscation: bool | None = None
    continuous_usage_stats: bool | None = False


class ResponseFormat(BaseModel):
    type: str


class _Sampling(_Strict):
    """Sampling and the search loop's knobs, shared by all three APIs."""

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


class _Completion(_Sampling):
    """Fields of chat and text completions."""

    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(None, ge=1)
    n: int | None = None
    stop: str | list[str] | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None

    @field_validator("n")
    @classmethod
    def _n(cls, v: int | None) -> int | None:
        if v not in (None, 1):
            raise unsupported("only n=1 is supported: each choice would run its own search loop; send n requests")
        return v

    _rejected = reject_if_set({
        "stop": "stop is not supported: the server owns stopping (</search>, EOS)",
        "presence_penalty": "presence penalties are not supported: use repetition_penalty or temperature",
        "frequency_penalty": "frequency penalties are not supported: use repetition_penalty or temperature",
        "logit_bias": "logit_bias is not supported: it would bias the search tags too",
    })  # fmt: skip


# -- requests -----------------------------------------------------------------------------------


class ChatCompletionRequest(_Completion):
    """``POST /v1/chat/completions``."""

    messages: list[Message] = Field(min_length=1, max_length=MAX_MESSAGES)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool | None = False
    top_logprobs: int | None = None
    tools: list[Any] | None = None
    tool_choice: Any = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    reasoning_effort: ReasoningEffort | None = Field(None, description="a search budget (EFFORT_SEARCHES)")
    verbosity: str | None = None
    modalities: list[str] | None = None
    prediction: Any = None
    web_search_options: Any = Field(None, description="accepted: this model always searches its own index")
    audio: Any = None
    # -- extensions (vLLM's and ours) --
    reasoning_format: ReasoningFormat = "parsed"
    include_reasoning: bool | None = Field(None, description="vLLM's: false leaves the reasoning out")
    chat_template_kwargs: dict[str, Any] | None = Field(None, description="accepted; the ReSearch templates are fixed")

    _rejected_chat = reject_if_set({
        "tools": "tools are not supported: the server runs its search tool itself",
        "logprobs": "logprobs are not supported: responses mix model and retrieved tokens",
        "top_logprobs": "logprobs are not supported: responses mix model and retrieved tokens",
        "audio": "audio output is not supported",
    })  # fmt: skip

    @field_validator("tool_choice")
    @classmethod
    def _tool_choice(cls, v: Any) -> Any:
        if v not in (None, "none", "auto"):
            raise unsupported("tool_choice is not supported: the server runs its search tool itself")
        return v

    @field_validator("response_format")
    @classmethod
    def _response_format(cls, v: ResponseFormat | None) -> ResponseFormat | None:
        if v is not None and v.type != "text":
            raise unsupported(f"response_format {v.type!r} is not supported: only text")
        return v

    @field_validator("modalities")
    @classmethod
    def _modalities(cls, v: list[str] | None) -> list[str] | None:
        if v and set(v) != {"text"}:
            raise unsupported("only the text modality is supported")
        return v

    @field_validator("messages")
    @classmethod
    def _a_user_message(cls, v: list[Message]) -> list[Message]:
        if not any(m.role == "user" for m in v):
            raise ValueError("messages must contain at least one user message (the question)")
        return v

    @property
    def token_budget(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    @property
    def effort(self) -> ReasoningEffort | None:
        return self.reasoning_effort


class CompletionRequest(_Completion):
    """``POST /v1/completions``: the same loop on a prompt you render yourself."""

    prompt: Text | list[int] = Field(min_length=1)
    echo: bool | None = False
    logprobs: int | None = None
    suffix: str | None = None
    best_of: int | None = None

    _rejected_completion = reject_if_set(
        {name: f"{name} is not supported with a server-side search loop" for name in ("echo", "logprobs", "suffix")}
    )

    @field_validator("best_of")
    @classmethod
    def _best_of(cls, v: int | None) -> int | None:
        if (v or 1) > 1:
            raise unsupported("best_of > 1 is not supported: each candidate would run its own search loop")
        return v

    @property
    def token_budget(self) -> int | None:
        return self.max_tokens

    @property
    def effort(self) -> ReasoningEffort | None:
        return None


class ReasoningParam(_Strict):
    effort: ReasoningEffort | None = None
    summary: Literal["auto", "concise", "detailed"] | None = None
    generate_summary: Literal["auto", "concise", "detailed"] | None = None


class TextFormat(_Strict):
    type: str
    name: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None
    description: str | None = None


class TextParam(_Strict):
    format: TextFormat | None = None
    verbosity: str | None = None


class ResponsesRequest(_Sampling):
    """``POST /v1/responses``. Nothing is stored: ``store`` is accepted and has no effect,
    and ``previous_response_id``/``conversation`` are a 400 (send the earlier turns in ``input``)."""

    input: Text | Annotated[list[dict[str, Any]], Field(max_length=MAX_MESSAGES)]
    instructions: Text | None = None
    max_output_tokens: int | None = Field(None, ge=1)
    reasoning: ReasoningParam | None = None
    text: TextParam | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: Any = None
    parallel_tool_calls: bool | None = None
    max_tool_calls: int | None = Field(None, ge=0, description="the search budget, like max_searches")
    previous_response_id: str | None = None
    conversation: Any = None
    include: list[str] | None = None
    truncation: Literal["auto", "disabled"] | None = None
    top_logprobs: int | None = None
    background: bool | None = None
    prompt: Any = None
    stream_options: StreamOptions | None = None

    @field_validator("tools")
    @classmethod
    def _tools(cls, v: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
        for tool in v or []:
            if tool.get("type") not in ("web_search", "web_search_preview", "file_search"):
                raise unsupported(
                    f"{tool.get('type')!r} tools are not supported: the server runs its own search tool "
                    "(web_search/file_search tools are accepted: they describe what it does)"
                )
        return v

    _rejected_responses = reject_if_set({
        **dict.fromkeys(
            ("previous_response_id", "conversation", "prompt"),
            "responses are not stored on this server: send the earlier turns in input",
        ),
        "background": "background responses are not supported: stream instead",
        "top_logprobs": "logprobs are not supported: responses mix model and retrieved tokens",
    })  # fmt: skip

    @field_validator("text")
    @classmethod
    def _text(cls, v: TextParam | None) -> TextParam | None:
        if v is not None and v.format is not None and v.format.type != "text":
            raise unsupported(f"text.format {v.format.type!r} is not supported: only text")
        return v

    @field_validator("input")
    @classmethod
    def _input(cls, v: str | list[dict[str, Any]]) -> str | list[dict[str, Any]]:
        if isinstance(v, str):
            if not v.strip():
                raise ValueError("input must not be empty")
            return v
        for i, item in enumerate(v):
            kind = item.get("type", "message")
            content = item.get("content")
            for text in [content] if isinstance(content, str) else [p.get("text") for p in content or []]:
                if isinstance(text, str):
                    try:
                        check_unicode(text)
                    except ValueError as exc:
                        raise ValueError(f"input[{i}].content: {exc}") from None
            if kind == "message" and item.get("role") not in ("system", "developer", "user", "assistant"):
                raise ValueError(f"input[{i}] has role {item.get('role')!r}; use system, developer, user or assistant")
            if kind in ("function_call", "function_call_output", "custom_tool_call", "custom_tool_call_output"):
                raise unsupported("function tools are not supported: the server runs its search tool itself")
        if not any(item.get("type", "message") == "message" and item.get("role") == "user" for item in v):
            raise ValueError("input must contain at least one user message (the question)")
        return v

    @model_validator(mode="after")
    def _searches(self) -> ResponsesRequest:
        if self.max_tool_calls is not None and self.max_searches is None:
            self.max_searches = self.max_tool_calls
        return self

    def messages(self) -> list[Message]:
        """``instructions`` and ``input`` as chat messages (other item types are context we drop)."""
        out = [Message(role="system", content=self.instructions)] if self.instructions else []
        if isinstance(self.input, str):
            return [*out, Message(role="user", content=self.input)]
        for item in self.input:
            if item.get("type", "message") != "message":
                continue  # reasoning and search-call items of earlier turns
            content = item.get("content")
            if isinstance(content, list):
                content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
            out.append(Message(role=item["role"], content=content or ""))
        return out

    @property
    def token_budget(self) -> int | None:
        return self.max_output_tokens

    @property
    def effort(self) -> ReasoningEffort | None:
        return self.reasoning.effort if self.reasoning else None


# -- responses ----------------------------------------------------------------------------------


class ChatMessageOut(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str
    refusal: None = None
    reasoning: str | None = None
    reasoning_content: str | None = None
    # -- extensions --
    answer: str | None
    searches: list[Search]
    citations: list[Citation]


class ChatChoice(BaseModel):
    index: int = 0
    message: ChatMessageOut
    logprobs: None = None
    finish_reason: FinishReason
    stop_reason: str | None = None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class ChatDelta(Delta):
    role: Literal["assistant"] | None = None
    content: str | None = None
    reasoning: str | None = None
    reasoning_content: str | None = None
    # -- extensions --
    searches: list[SearchDelta] | None = None
    answer: str | None = None
    citations: list[Citation] | None = None


class ChatChunkChoice(BaseModel):
    index: int = 0
    delta: ChatDelta
    logprobs: None = None
    finish_reason: FinishReason | None = None
    stop_reason: str | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: Usage | None = None


class CompletionChoice(BaseModel):
    index: int = 0
    text: str
    logprobs: None = None
    finish_reason: FinishReason | None
    stop_reason: str | None = None
    # -- extensions --
    searches: list[Search] | list[SearchDelta] | None = None
    answer: str | None = None
    citations: list[Citation] | None = None


class Completion(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


class SummaryText(BaseModel):
    type: Literal["summary_text"] = "summary_text"
    text: str


class ReasoningItem(BaseModel):
    """The model's thinking up to a search (or the answer), its ``<think>`` text as the summary."""

    id: str
    type: Literal["reasoning"] = "reasoning"
    summary: list[SummaryText]
    status: Literal["in_progress", "completed"] | None = None


class FileSearchResult(BaseModel):
    file_id: str = Field(description="the passage id")
    filename: str = Field(description="the passage title")
    score: float | None
    text: str
    attributes: dict[str, Any] = Field(default_factory=dict)


class FileSearchCallItem(BaseModel):
    """One search of the loop: the query the model wrote and the passages it got."""

    id: str
    type: Literal["file_search_call"] = "file_search_call"
    status: Literal["in_progress", "searching", "completed"]
    queries: list[str]
    results: list[FileSearchResult] | None = None


class FileCitation(BaseModel):
    type: Literal["file_citation"] = "file_citation"
    file_id: str
    filename: str
    index: int


class OutputText(BaseModel):
    type: Literal["output_text"] = "output_text"
    text: str
    annotations: list[FileCitation] = Field(default_factory=list)
    logprobs: list[Any] = Field(default_factory=list)


class MessageItem(BaseModel):
    id: str
    type: Literal["message"] = "message"
    role: Literal["assistant"] = "assistant"
    status: Literal["in_progress", "completed", "incomplete"]
    content: list[OutputText]


OutputItem = ReasoningItem | FileSearchCallItem | MessageItem


class ResponseUsage(BaseModel):
    input_tokens: int
    input_tokens_details: dict[str, int] = Field(default_factory=lambda: {"cached_tokens": 0})
    output_tokens: int
    output_tokens_details: dict[str, int] = Field(default_factory=lambda: {"reasoning_tokens": 0})
    total_tokens: int
    # -- extensions --
    retrieved_tokens: int
    searches: int


class ResponseObject(BaseModel):
    id: str
    object: Literal["response"] = "response"
    created_at: int
    status: Literal["in_progress", "completed", "incomplete", "failed"]
    model: str
    output: list[OutputItem]
    usage: ResponseUsage | None = None
    error: dict[str, Any] | None = None
    incomplete_details: dict[str, str] | None = None
    instructions: str | None = None
    max_output_tokens: int | None = None
    parallel_tool_calls: bool = False
    temperature: float | None = None
    top_p: float | None = None
    tool_choice: Any = "auto"
    tools: list[Any] = Field(default_factory=list)
    text: dict[str, Any] = Field(default_factory=lambda: {"format": {"type": "text"}})
    reasoning: dict[str, Any] | None = None
    store: bool = False
    metadata: dict[str, str] = Field(default_factory=dict)
    # -- extensions --
    answer: str | None = None
