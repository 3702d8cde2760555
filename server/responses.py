"""The Responses API (``POST /v1/responses``): its request, its serving object and the route.

A run's events become output items (reasoning, a ``file_search_call`` or, with
``--web-search``, a ``web_search_call`` per search, the answer's message) by
:class:`~research.server.response_builder.ResponseBuilder`, streamed or whole; their types are
:mod:`research.server.response_items`. Nothing is stored.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from research.http_errors import Text, check_unicode
from research.server.requests import (
    MAX_MESSAGES,
    MAX_TOP_LOGPROBS,
    FunctionCall,
    Message,
    MessageToolCall,
    ReasoningEffort,
    Role,
    SamplingFields,
    StreamOptions,
    Strict,
    reject_if_set,
    unsupported,
)
from research.server.response_builder import ResponseBuilder, response_events, response_object
from research.server.response_items import ResponseObject, Tool
from research.server.routing import OpenAIServing, api_router, sse
from research.server.serving import Job
from research.wire import Event

# -- the request --------------------------------------------------------------------------------

LOGPROBS = "message.output_text.logprobs"
"""The ``include`` entry that asks for the answer text's log-probabilities."""


class InputContent(BaseModel):
    """A part of an input message's content; its ``text`` is what the prompt shows (images have none)."""

    model_config = ConfigDict(extra="allow")
    type: str = "input_text"
    text: str | None = None


class InputItem(BaseModel):
    """An ``input`` item: a message, or an earlier turn's output (reasoning, a search call) sent back as context.

    Only messages reach the prompt; other items are accepted and dropped (the templates cannot show them).
    """

    model_config = ConfigDict(extra="allow")
    type: str = "message"
    role: Role | None = None
    content: str | list[InputContent] | None = None
    # a function_call's, a function_call_output's
    call_id: Text | None = None
    name: Text | None = None
    arguments: Text | None = None
    output: Text | None = None

    @property
    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text or "" for part in self.content)
        return self.content or ""


class ReasoningParam(Strict):
    effort: ReasoningEffort | None = None
    summary: Literal["auto", "concise", "detailed"] | None = None
    generate_summary: Literal["auto", "concise", "detailed"] | None = None


class TextFormat(Strict):
    type: str
    name: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None
    description: str | None = None


class TextParam(Strict):
    format: TextFormat | None = None
    verbosity: str | None = None


class ResponsesRequest(SamplingFields):
    """``POST /v1/responses``. Nothing is stored: ``store`` is accepted and has no effect,
    and ``previous_response_id``/``conversation`` are a 400 (send the earlier turns in ``input``)."""

    input: Text | Annotated[list[InputItem], Field(max_length=MAX_MESSAGES)]
    instructions: Text | None = None
    max_output_tokens: int | None = Field(None, ge=1)
    reasoning: ReasoningParam | None = None
    text: TextParam | None = None
    tools: list[Tool] | None = None
    tool_choice: Any = None
    parallel_tool_calls: bool | None = None
    max_tool_calls: int | None = Field(None, ge=0, description="the search budget, like max_searches")
    previous_response_id: str | None = None
    conversation: Any = None
    include: list[str] | None = None
    truncation: Literal["auto", "disabled"] | None = None
    top_logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS, description="with include's logprobs")
    background: bool | None = None
    prompt: Any = None
    stream_options: StreamOptions | None = None

    @field_validator("tools")
    @classmethod
    def _tools(cls, v: list[Tool] | None) -> list[Tool] | None:
        for tool in v or []:
            if tool.type not in ("web_search", "web_search_preview", "file_search", "function"):
                raise unsupported(
                    f"{tool.type!r} tools are not supported: the server runs its own search tool "
                    "(web_search/file_search tools are accepted: they describe what it does; function tools on "
                    "ReCall models)"
                )
        return v

    @model_validator(mode="after")
    def _tool_choice(self) -> ResponsesRequest:
        if self.functions and self.tool_choice not in (None, "none", "auto"):
            raise unsupported(
                "tool_choice can be none or auto with function tools: the model decides whether it calls a function"
            )
        return self

    _rejected_responses = reject_if_set({
        **dict.fromkeys(
            ("previous_response_id", "conversation", "prompt"),
            "responses are not stored on this server: send the earlier turns in input",
        ),
        "background": "background responses are not supported: stream instead",
    })  # fmt: skip

    @field_validator("include")
    @classmethod
    def _include(cls, v: list[str] | None) -> list[str] | None:
        if v and "reasoning.encrypted_content" in v:
            raise unsupported(
                "reasoning.encrypted_content cannot be included: the reasoning is sent in the clear (its summary)"
            )
        return v

    @property
    def listed_logprobs(self) -> int | None:
        """``include: ["message.output_text.logprobs"]`` or ``top_logprobs`` > 0: the answer text's logprobs."""
        if LOGPROBS in (self.include or []) or self.top_logprobs:
            return self.top_logprobs or 0
        return None

    @field_validator("text")
    @classmethod
    def _text(cls, v: TextParam | None) -> TextParam | None:
        if v is not None and v.format is not None and v.format.type != "text":
            raise unsupported(f"text.format {v.format.type!r} is not supported: only text")
        return v

    @field_validator("input", mode="before")
    @classmethod
    def _input(cls, v: Any) -> Any:
        """Checked as sent, so each error names the item (``input[2] has role ...``), not the union's branches."""
        if isinstance(v, str):
            if not v.strip():
                raise ValueError("input must not be empty")
            return v
        if not isinstance(v, list) or not all(isinstance(item, dict) for item in v):
            return v  # not a list of items: the type check says so
        for i, item in enumerate(v):
            kind = item.get("type", "message")
            if not isinstance(kind, str):
                raise ValueError(f"input[{i}].type must be a string")
            content = item.get("content")
            parts = [content] if isinstance(content, str) else content if isinstance(content, list) else []
            for text in [p if isinstance(p, str) else p.get("text") if isinstance(p, dict) else None for p in parts]:
                if isinstance(text, str):
                    try:
                        check_unicode(text)
                    except ValueError as exc:
                        raise ValueError(f"input[{i}].content: {exc}") from None
            if kind == "message" and item.get("role") not in ("system", "developer", "user", "assistant"):
                raise ValueError(f"input[{i}] has role {item.get('role')!r}; use system, developer, user or assistant")
            if kind in ("custom_tool_call", "custom_tool_call_output"):
                raise unsupported("custom tools are not supported: function tools are, on ReCall models")
            needs = {"function_call": ("call_id", "name", "arguments"), "function_call_output": ("call_id", "output")}
            for key in needs.get(kind, ()):
                if not isinstance(item.get(key), str):
                    raise ValueError(f"input[{i}]: a {kind} item needs {key}, a string")
        if not any(item.get("type", "message") == "message" and item.get("role") == "user" for item in v):
            raise ValueError("input must contain at least one user message (the question)")
        return v

    @model_validator(mode="after")
    def _searches(self) -> ResponsesRequest:
        if self.max_tool_calls is not None and self.max_searches is None:
            self.max_searches = self.max_tool_calls
        return self

    def messages(self) -> list[Message]:
        """``instructions`` and ``input`` as chat messages (reasoning and search items are context we drop).

        A turn's ``function_call`` items become the ``tool_calls`` of its assistant message (after its message
        item, if it has one), each ``function_call_output`` a ``tool`` message.
        """
        out = [Message(role="system", content=self.instructions)] if self.instructions else []
        if isinstance(self.input, str):
            return [*out, Message(role="user", content=self.input)]
        for item in self.input:
            if item.type == "message" and item.role is not None:  # else an earlier turn's reasoning or search
                out.append(Message(role=item.role, content=item.text))
            elif item.type == "function_call":
                call = MessageToolCall(id=item.call_id, function=FunctionCall(name=item.name, arguments=item.arguments))
                if not (out and out[-1].role == "assistant" and (out[-1].tool_calls or not out[-1].text.strip())):
                    out.append(Message(role="assistant", content=None))
                out[-1] = out[-1].model_copy(update={"tool_calls": [*(out[-1].tool_calls or []), call]})
            elif item.type == "function_call_output":
                out.append(Message(role="tool", tool_call_id=item.call_id, content=item.output))
        return out

    @property
    def functions(self) -> list[dict[str, Any]]:
        """The request's ``function`` tools, in chat's shape."""
        return [tool.as_chat_tool() for tool in self.tools or [] if tool.type == "function"]

    @property
    def client_tools(self) -> list[str]:
        return [] if self.tool_choice == "none" else [str(t["function"].get("name")) for t in self.functions]

    @property
    def token_budget(self) -> int | None:
        return self.max_output_tokens

    @property
    def budget_param(self) -> str:
        return "max_output_tokens"

    @property
    def prompt_param(self) -> str:
        return "input"

    @property
    def effort(self) -> ReasoningEffort | None:
        return self.reasoning.effort if self.reasoning else None


# -- serving and the route ------------------------------------------------------------------------


def new_response(job: Job) -> ResponseObject:
    """The response object as it starts: in progress, no output, the request's settings echoed."""
    body = job.body
    assert isinstance(body, ResponsesRequest)
    return ResponseObject(
        id=job.request_id,
        created_at=job.created,
        status="in_progress",
        model=body.model,
        output=[],
        instructions=body.instructions,
        max_output_tokens=body.max_output_tokens,
        temperature=body.temperature,
        top_p=body.top_p,
        tools=body.tools or [],
        tool_choice=body.tool_choice or "auto",
        parallel_tool_calls=bool(body.parallel_tool_calls),
        reasoning=body.reasoning.model_dump(exclude_none=True) if body.reasoning else None,
        metadata=body.metadata or {},
    )


class ResponsesServing(OpenAIServing):
    """``POST /v1/responses``: the chat prompt from ``instructions`` and ``input``, the loop, as output items."""

    prefix = "resp"
    ends_with_done = False

    async def prompt(self, body: ResponsesRequest, request: Request) -> list[int]:
        tools = self.server.function_tools(body.functions)
        return await self.chat_prompt(request, body.messages(), tools if body.tool_choice != "none" else [])

    def builder(self, job: Job) -> ResponseBuilder:
        body = job.body
        assert isinstance(body, ResponsesRequest)
        sources = "web_search_call.action.sources" in (body.include or [])
        return ResponseBuilder(new_response(job), web=self.server.searches_web, sources=sources)

    def chunks(self, job: Job, events: AsyncIterator[Event]) -> AsyncIterator[bytes]:
        return (sse(e, e.type) async for e in response_events(self.builder(job), events))

    async def whole(self, job: Job) -> ResponseObject:
        return await response_object(self.builder(job), self.server.run(job))


def router(serving: ResponsesServing) -> APIRouter:
    """``POST /v1/responses``."""
    return api_router(serving, "/v1/responses", ResponsesRequest, ResponseObject, name="responses", tag="responses")
