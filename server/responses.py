"""The Responses API (``POST /v1/responses``): its request, its serving object and the route.

A run's events become output items (reasoning, a ``file_search_call`` or, with
``--web-search``, a ``web_search_call`` per search, the answer's message) by
:class:`~research.server.response_builder.ResponseBuilder`, streamed or whole; their types are
:mod:`research.server.response_items`. A response is stored unless ``store: false``
(:mod:`research.server.stored_responses`): a later turn continues it (``previous_response_id``), or
a conversation's items (``conversation``); ``background: true`` runs it as a task of the server
(:mod:`research.server.background`) and answers at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass
from functools import partial
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from research.http_errors import APIError, StrictJSONResponse, Text, check_unicode
from research.server.access import owner_of
from research.server.records import as_item, history_messages
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
from research.server.response_builder import ResponseBuilder, response_events
from research.server.response_items import ResponseObject, StreamEvent, Tool
from research.server.routing import OpenAIServing, api_router, sse
from research.server.serving import Job
from research.server.stored_responses import follow
from research.wire import Event

log = logging.getLogger("research.server")

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


class ConversationParam(Strict):
    id: Text


class ResponsesRequest(SamplingFields):
    """``POST /v1/responses``: stored unless ``store: false``; continuing a stored response or a conversation."""

    previous_response_id: Text | None = None
    conversation: Text | ConversationParam | None = None
    # after the two above: whether the input must ask a question depends on them
    input: Text | Annotated[list[InputItem], Field(max_length=MAX_MESSAGES)]
    instructions: Text | None = None
    max_output_tokens: int | None = Field(None, ge=1)
    reasoning: ReasoningParam | None = None
    text: TextParam | None = None
    tools: list[Tool] | None = None
    tool_choice: Any = None
    parallel_tool_calls: bool | None = None
    max_tool_calls: int | None = Field(None, ge=0, description="the search budget, like max_searches")
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

    _rejected_responses = reject_if_set({"prompt": "prompt templates are not supported: send the prompt in input"})

    @field_validator("conversation")
    @classmethod
    def _one_history(cls, v: Any, info: ValidationInfo) -> Any:
        if v is not None and info.data.get("previous_response_id") is not None:
            raise unsupported("previous_response_id and conversation cannot be used together")
        return v

    @field_validator("input")
    @classmethod
    def _asks(cls, v: Any, info: ValidationInfo) -> Any:
        """A first turn asks a question; a continued one may only answer a function call."""
        continued = info.data.get("previous_response_id") is not None or info.data.get("conversation") is not None
        if isinstance(v, list) and not continued and not any(i.type == "message" and i.role == "user" for i in v):
            raise ValueError("input must contain at least one user message (the question)")
        return v

    @field_validator("background")
    @classmethod
    def _stored(cls, v: bool | None, info: ValidationInfo) -> bool | None:
        if v and info.data.get("store") is False:
            raise unsupported("a background response is stored: background needs store true")
        return v

    @property
    def conversation_id(self) -> str | None:
        return self.conversation.id if isinstance(self.conversation, ConversationParam) else self.conversation

    @property
    def own_items(self) -> list[InputItem]:
        """The request's own ``input`` as items (a string is one user message)."""
        if isinstance(self.input, str):
            return [InputItem(type="message", role="user", content=self.input)]
        return list(self.input)

    def continued(self, history: list[dict[str, Any]]) -> ResponsesRequest:
        """This request with ``history`` (stored items) before its own input: as if the client had sent them all."""
        items = [InputItem.model_validate(item) for item in history]
        return self.model_copy(update={"input": [*items, *self.own_items]})

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
    """The response object as it starts: in progress (queued in the background), no output, the request's settings
    echoed."""
    body = job.body
    assert isinstance(body, ResponsesRequest)
    return ResponseObject(
        id=job.request_id,
        created_at=job.created,
        status="queued" if body.background else "in_progress",
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
        store=body.store is not False,
        background=bool(body.background),
        previous_response_id=body.previous_response_id,
        conversation={"id": body.conversation_id} if body.conversation_id else None,
        metadata=body.metadata or {},
    )


@dataclass
class Turn:
    """A Responses request about to run: whose it is, the response it grows, and what is kept of it."""

    owner: str
    response: ResponseObject
    own: list[dict[str, Any]]
    """The request's own input items, as stored and listed."""
    stored: bool


class ResponsesServing(OpenAIServing):
    """``POST /v1/responses``: the chat prompt from ``instructions`` and ``input``, the loop, as output items."""

    prefix = "resp_"
    ends_with_done = False

    async def create(self, body: ResponsesRequest, request: Request) -> Response:
        """Continue the stored turns it names, run it (in the background, streamed or whole), store it."""
        server, owner = self.server, owner_of(request)
        server.check_model(body.model)
        history = await server.records.history(owner, body.previous_response_id, body.conversation_id)
        full = body.continued(history) if history else body
        prompt = await self.prompt(full, request)
        try:
            job = server.job(full, prompt, self.prefix)
        except APIError as error:
            if error.code == "context_length_exceeded" and history:
                raise APIError(
                    400, f"{error.message}: the {history_messages(history)} stored messages this turn continues and "
                    "its input do not fit; start a new conversation", param=error.param, code=error.code,
                ) from None  # fmt: skip
            raise
        turn = Turn(owner, new_response(job), [as_item(item) for item in body.own_items], body.store is not False)
        if body.background:  # stored: its request says store true
            server.background.check_room()
        if turn.stored:
            await server.records.start(owner, turn.response, [*history, *turn.own], turn.own)
        if body.background:
            created = turn.response.model_dump(mode="json")
            finish = partial(server.records.add_to_conversation, owner, own=turn.own)
            server.background.run(turn.response, response_events(self.builder(job, turn.response), server.run(job)),
                                  finish)  # fmt: skip
            if body.stream:
                return follow(server.records, job.request_id, owner, -1)
            return StrictJSONResponse(created, headers={"x-request-id": job.request_id})
        if body.stream:
            return self.stream(job, lambda events: self.sse(job, turn, events))
        return await self.reply(request, job, self.whole_turn(job, turn))

    async def prompt(self, body: ResponsesRequest, request: Request) -> list[int]:
        tools = self.server.function_tools(body.functions)
        return await self.chat_prompt(request, body.messages(), tools if body.tool_choice != "none" else [])

    def builder(self, job: Job, response: ResponseObject) -> ResponseBuilder:
        body = job.body
        assert isinstance(body, ResponsesRequest)
        sources = "web_search_call.action.sources" in (body.include or [])
        return ResponseBuilder(response, web=self.server.searches_web, sources=sources)

    async def kept(self, job: Job, turn: Turn, events: AsyncIterator[Event]) -> AsyncIterator[StreamEvent]:
        """The turn's stream events; the response stored as it ended (failed, or cancelled if the client left)."""
        response = turn.response
        try:
            async for event in response_events(self.builder(job, response), events):
                yield event
        except Exception as exc:
            response.status, response.error = "failed", {"code": "search_loop_failed", "message": str(exc)[:200]}
            raise
        except BaseException:  # the client left
            response.status = "cancelled"
            raise
        finally:
            if turn.stored:
                try:
                    await asyncio.shield(self.server.records.end(turn.owner, response, turn.own))
                except Exception as exc:  # the reply is the client's: a store that failed since is logged
                    log.warning("the response could not be stored (%s)", exc, extra={"request_id": job.request_id})

    def sse(self, job: Job, turn: Turn, events: AsyncIterator[Event]) -> AsyncIterator[bytes]:
        return (sse(e, e.type) async for e in self.kept(job, turn, events))

    async def whole_turn(self, job: Job, turn: Turn) -> ResponseObject:
        async with aclosing(self.kept(job, turn, self.server.run(job))) as events:
            async for _ in events:
                pass
        return turn.response


def router(serving: ResponsesServing) -> APIRouter:
    """``POST /v1/responses``."""
    return api_router(serving, "/v1/responses", ResponsesRequest, ResponseObject, name="responses", tag="responses")
