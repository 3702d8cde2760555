"""Chat completions (``POST /v1/chat/completions``): the request, the reply and its chunks, and the route.

Streaming chunks carry the text as it comes (``delta.reasoning``/``reasoning_content``
before ``<answer>``, ``delta.content`` after), every search as an entry of
``delta.searches`` with an ``index``, the query first and then, under the same index,
only the results (so the ``openai`` SDK's accumulator rebuilds each search whole, as it
does ``tool_calls``), and the answer and citations on the last choice chunk.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field, ValidationInfo, field_validator

from research.server.requests import (
    MAX_MESSAGES,
    MAX_TOP_LOGPROBS,
    CompletionFields,
    Message,
    ReasoningEffort,
    ReasoningFormat,
    reject_if_set,
    unsupported,
)
from research.server.routing import OpenAIServing, api_router, sse
from research.server.serving import Job, total_usage
from research.wire import (
    ChoiceLogprobs,
    Citation,
    Content,
    Delta,
    Done,
    Event,
    FinishReason,
    Reasoning,
    Reply,
    Search,
    SearchDelta,
    SearchDone,
    SearchIssued,
    TokenIds,
    ToolCall,
    Usage,
)

# -- the request --------------------------------------------------------------------------------


class ResponseFormat(BaseModel):
    type: str


class ChatCompletionRequest(CompletionFields):
    """``POST /v1/chat/completions``."""

    messages: list[Message] = Field(min_length=1, max_length=MAX_MESSAGES)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool | None = False
    top_logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS, description="with logprobs")
    tools: list[dict[str, Any]] | None = Field(None, max_length=128, description="functions: ReCall models only")
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

    _rejected_chat = reject_if_set({"audio": "audio output is not supported"})

    @field_validator("top_logprobs")
    @classmethod
    def _top_logprobs(cls, v: int | None, info: ValidationInfo) -> int | None:
        if v and not info.data.get("logprobs"):
            raise ValueError("top_logprobs needs logprobs: true")
        return v

    @property
    def listed_logprobs(self) -> int | None:
        return (self.top_logprobs or 0) if self.logprobs else None

    @field_validator("tool_choice")
    @classmethod
    def _tool_choice(cls, v: Any) -> Any:
        if v not in (None, "none", "auto"):
            raise unsupported(
                "tool_choice can be none or auto: the model decides whether it calls a function (no constrained "
                "decoding forces a call)"
            )
        return v

    @property
    def client_tools(self) -> list[str]:
        """The names of the client's functions the model may call (none with ``tool_choice: none``; the tools are
        checked when the prompt is rendered, :meth:`Server.function_tools`)."""
        return [] if self.tool_choice == "none" else [str(t.get("function", {}).get("name")) for t in self.tools or []]

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
    def budget_param(self) -> str:
        return "max_tokens" if self.max_completion_tokens is None else "max_completion_tokens"

    @property
    def prompt_param(self) -> str:
        return "messages"

    @property
    def effort(self) -> ReasoningEffort | None:
        return self.reasoning_effort

    @property
    def raw(self) -> bool:
        return self.reasoning_format == "raw"

    @property
    def shows_reasoning(self) -> bool:
        return not self.raw and self.include_reasoning is not False


# -- the reply ----------------------------------------------------------------------------------


class AnnotationURLCitation(BaseModel):
    url: str
    title: str
    start_index: int
    end_index: int


class Annotation(BaseModel):
    """A web page the answer was given (OpenAI's ``url_citation``), over the whole content."""

    type: Literal["url_citation"] = "url_citation"
    url_citation: AnnotationURLCitation


def url_citations(out: Reply) -> list[Annotation] | None:
    """The web pages among the reply's citations (None when it cites an index's passages only)."""
    end = len(out.content)
    pages = [
        Annotation(url_citation=AnnotationURLCitation(url=c.url, title=c.title, start_index=0, end_index=end))
        for c in out.citations
        if c.url
    ]
    return pages or None


class ChatToolCallFunction(BaseModel):
    name: str
    arguments: str


class ChatToolCall(BaseModel):
    id: str
    type: Literal["function"] = "function"
    function: ChatToolCallFunction

    @classmethod
    def of(cls, call: ToolCall) -> ChatToolCall:
        return cls(id=call.id, function=ChatToolCallFunction(name=call.name, arguments=call.arguments))


class ChatToolCallDelta(ChatToolCall):
    index: int


class ChatMessageOut(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None
    """None when the reply is only calls of the client's functions, as OpenAI's."""
    refusal: None = None
    tool_calls: list[ChatToolCall] | None = None
    annotations: list[Annotation] | None = None
    reasoning: str | None = None
    reasoning_content: str | None = None
    # -- extensions --
    answer: str | None
    searches: list[Search]
    citations: list[Citation]


class ChatChoice(TokenIds):
    index: int = 0
    message: ChatMessageOut
    logprobs: ChoiceLogprobs | None = None
    finish_reason: FinishReason
    stop_reason: str | int | None = None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage
    prompt_token_ids: list[int] | None = None
    """The prompt's token ids (``return_token_ids``)."""


class ChatDelta(Delta):
    role: Literal["assistant"] | None = None
    content: str | None = None
    reasoning: str | None = None
    reasoning_content: str | None = None
    tool_calls: list[ChatToolCallDelta] | None = None
    # -- extensions --
    searches: list[SearchDelta] | None = None
    answer: str | None = None
    citations: list[Citation] | None = None
    annotations: list[Annotation] | None = None


class ChatChunkChoice(TokenIds):
    index: int = 0
    delta: ChatDelta
    logprobs: ChoiceLogprobs | None = None
    finish_reason: FinishReason | None = None
    stop_reason: str | int | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: Usage | None = None
    prompt_token_ids: list[int] | None = None
    """On the first chunk, with ``return_token_ids``."""


# -- rendering ----------------------------------------------------------------------------------


def chat_choice(job: Job, out: Reply) -> ChatChoice:
    reasoning = out.reasoning if job.body.shows_reasoning else None
    calls = [ChatToolCall.of(call) for call in out.tool_calls] or None
    message = ChatMessageOut(
        content=None if calls and not out.content else out.content,
        tool_calls=calls,
        reasoning=reasoning,
        reasoning_content=reasoning,
        answer=out.answer,
        searches=out.searches,
        citations=out.citations,
        annotations=url_citations(out),
    )
    return ChatChoice(
        index=out.index, message=message, logprobs=shown_logprobs(job, out.logprobs), finish_reason=out.finish_reason,
        stop_reason=out.stop_reason, **TokenIds.of(out),
    )  # fmt: skip


def chat_completion(job: Job, replies: list[Reply]) -> ChatCompletion:
    return ChatCompletion(
        id=job.request_id, created=job.created, model=replies[0].model, choices=[chat_choice(job, r) for r in replies],
        usage=total_usage(replies), prompt_token_ids=job.prompt_ids if job.body.wants_token_ids else None,
    )  # fmt: skip


def shown_logprobs(job: Job, logprobs: ChoiceLogprobs | None) -> ChoiceLogprobs | None:
    """The log-probabilities as the client sees them: without ``reasoning`` when the reasoning is not shown."""
    if logprobs is None or job.body.shows_reasoning:
        return logprobs
    return ChoiceLogprobs(content=logprobs.content)


def chat_delta(job: Job, event: Event) -> ChatDelta | None:
    """The chat delta of one event (None: nothing to send)."""
    if isinstance(event, Reasoning):
        return ChatDelta(reasoning=event.text, reasoning_content=event.text) if job.body.shows_reasoning else None
    if isinstance(event, Content):
        return ChatDelta(content=event.text)
    if isinstance(event, SearchIssued | SearchDone):
        return ChatDelta(searches=[SearchDelta.of(event)])
    assert isinstance(event, Done)
    pages = {"annotations": found} if (found := url_citations(event.reply)) else {}
    return ChatDelta(answer=event.reply.answer, citations=event.reply.citations, **pages)


async def chat_chunks(job: Job, events: AsyncIterator[Event]) -> AsyncIterator[ChatCompletionChunk]:
    """The stream of ``chat.completion.chunk``s: each choice's (marked with its index) as its loop goes, usage last
    when asked for."""

    def chunk(choices: list[ChatChunkChoice], **extra) -> ChatCompletionChunk:
        return ChatCompletionChunk(
            id=job.request_id, created=job.created, model=job.body.model, choices=choices, **extra
        )

    ids = {"prompt_token_ids": job.prompt_ids} if job.body.wants_token_ids else {}
    for i in range(job.n):
        opening = ChatChunkChoice(index=i, delta=ChatDelta(role="assistant", content=""))
        yield chunk([opening], **(ids if i == 0 else {}))
    replies = []
    async for event in events:
        delta = chat_delta(job, event)
        if isinstance(event, Done):
            assert delta is not None
            end = event.reply
            replies.append(end)
            if end.tool_calls:  # whole, in a chunk of their own before the last, as the SDKs accumulate them
                calls = [ChatToolCallDelta(index=i, **ChatToolCall.of(c).model_dump())
                         for i, c in enumerate(end.tool_calls)]  # fmt: skip
                yield chunk([ChatChunkChoice(index=end.index, delta=ChatDelta(tool_calls=calls))])
            last = ChatChunkChoice(
                index=end.index, delta=delta, finish_reason=end.finish_reason, stop_reason=end.stop_reason,
                **TokenIds.of(end),
            )  # fmt: skip
            yield chunk([last])
        elif delta is not None:
            logprobs = shown_logprobs(job, event.logprobs) if isinstance(event, Reasoning | Content) else None
            yield chunk([ChatChunkChoice(index=event.choice, delta=delta, logprobs=logprobs)])
    if job.body.include_usage and replies:
        yield chunk([], usage=total_usage(replies))


# -- serving and the route ------------------------------------------------------------------------


class ChatServing(OpenAIServing):
    """``POST /v1/chat/completions``: the chat prompt in the model's template, the loop, chunks or a whole reply."""

    prefix = "chatcmpl-"

    async def prompt(self, body: ChatCompletionRequest, request: Request) -> list[int]:
        tools = self.server.function_tools(body.tools)
        return await self.chat_prompt(request, body.messages, tools if body.tool_choice != "none" else [])

    def chunks(self, job: Job, events: AsyncIterator[Event]) -> AsyncIterator[bytes]:
        return (sse(c) async for c in chat_chunks(job, events))

    async def whole(self, job: Job) -> ChatCompletion:
        return chat_completion(job, await self.final(job))


def router(serving: ChatServing) -> APIRouter:
    """``POST /v1/chat/completions``."""
    return api_router(serving, "/v1/chat/completions", ChatCompletionRequest, ChatCompletion,
                      name="chat_completions", tag="chat")  # fmt: skip
