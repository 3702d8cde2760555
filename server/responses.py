"""The Responses API (``POST /v1/responses``): its request, the builder of its output, the route.

A run becomes output items in the order they happen: a ``reasoning`` item for the
model's thinking up to each search (its text as the summary), one ``file_search_call``
item per search (the query, then the passages as results: ``file_id`` is the passage
id, ``filename`` its title), and the ``message`` whose ``output_text`` is the answer
text, with the passages it was given as ``file_citation`` annotations. Searching the web
(``--web-search``), each search is a ``web_search_call`` item instead (the query; the pages'
URLs as ``action.sources`` when ``include`` asks for ``web_search_call.action.sources``) and
the pages are ``url_citation`` annotations. Result blocks fed back to the model are not
repeated as reasoning: they are the search items' results.

:class:`ResponseBuilder` makes both the stream's events (the sequence the ``openai``
SDK's ``responses.stream()`` accumulates) and the final response object, so a
non-streaming reply is the same items built the same way (their types:
:mod:`research.server.response_items`). Nothing is stored.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from research.http_errors import Text, check_unicode
from research.server.requests import (
    MAX_MESSAGES,
    Message,
    ReasoningEffort,
    Role,
    SamplingFields,
    StreamOptions,
    Strict,
    reject_if_set,
    unsupported,
)
from research.server.response_items import (
    ContentPartEvent,
    FileCitation,
    FileSearchCallItem,
    FileSearchResult,
    ItemEvent,
    MessageItem,
    OutputItem,
    OutputItemEvent,
    OutputText,
    OutputTextDelta,
    OutputTextDone,
    ReasoningItem,
    ResponseEvent,
    ResponseObject,
    ResponseUsage,
    SearchSource,
    StreamEvent,
    SummaryPartEvent,
    SummaryText,
    SummaryTextDelta,
    SummaryTextDone,
    Tool,
    URLCitation,
    WebSearchAction,
    WebSearchCallItem,
)
from research.server.routing import Generation, generation_responses, sse
from research.server.serving import Job
from research.wire import Content, Done, Event, Reasoning, Reply, SearchDone, SearchIssued

# -- the request --------------------------------------------------------------------------------


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
    top_logprobs: int | None = None
    background: bool | None = None
    prompt: Any = None
    stream_options: StreamOptions | None = None

    @field_validator("tools")
    @classmethod
    def _tools(cls, v: list[Tool] | None) -> list[Tool] | None:
        for tool in v or []:
            if tool.type not in ("web_search", "web_search_preview", "file_search"):
                raise unsupported(
                    f"{tool.type!r} tools are not supported: the server runs its own search tool "
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
            if item.type == "message" and item.role is not None:  # else an earlier turn's reasoning or search
                out.append(Message(role=item.role, content=item.text))
        return out

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


# -- the builder --------------------------------------------------------------------------------


E = TypeVar("E", bound=ItemEvent)


def _id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


class ResponseBuilder:
    """Turns a run's events into Responses API stream events and output items.

    Events carry snapshots (copies) of the items and the response, which keep growing.
    """

    def __init__(self, job: Job, *, web: bool = False) -> None:
        body = job.body
        assert isinstance(body, ResponsesRequest)
        self.web = web
        """Searches are ``web_search_call`` items (else ``file_search_call``)."""
        self.sources = "web_search_call.action.sources" in (body.include or [])
        self.response = ResponseObject(
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
        self._sequence = 0
        self._open: OutputItem | None = None

    # -- events ------------------------------------------------------------
    def _next(self) -> int:
        self._sequence += 1
        return self._sequence - 1

    def _lifecycle(self, kind: str) -> ResponseEvent:
        return ResponseEvent(type=kind, sequence_number=self._next(), response=self.response.model_copy(deep=True))

    def _item(self, kind: str, item: OutputItem) -> OutputItemEvent:
        index = self._index(item)
        return OutputItemEvent(
            type=kind, sequence_number=self._next(), output_index=index, item=item.model_copy(deep=True)
        )

    def _about(self, event: type[E], kind: str, item: OutputItem, **fields: Any) -> E:
        return event(type=kind, sequence_number=self._next(), item_id=item.id, output_index=self._index(item), **fields)

    def _index(self, item: OutputItem) -> int:
        return next(i for i, x in enumerate(self.response.output) if x is item)

    def start(self) -> list[StreamEvent]:
        return [self._lifecycle("response.created"), self._lifecycle("response.in_progress")]

    def feed(self, event: Event) -> list[StreamEvent]:
        """The stream events for one run event (the items grow as a side effect)."""
        if isinstance(event, Reasoning | Content):
            if event.retrieved:
                return []
            return self._reasoning(event.text) if isinstance(event, Reasoning) else self._content(event.text)
        if isinstance(event, SearchIssued):
            item: FileSearchCallItem | WebSearchCallItem = (
                WebSearchCallItem(id=_id("ws"), status="in_progress", action=WebSearchAction(query=event.query))
                if self.web
                else FileSearchCallItem(id=_id("fs"), status="in_progress", queries=[event.query])
            )
            out = [*self._close(), *self._add(item), self._about(ItemEvent, f"response.{item.type}.in_progress", item)]
            item.status = "searching"
            return [*out, self._about(ItemEvent, f"response.{item.type}.searching", item)]
        if isinstance(event, SearchDone):
            item = self._open  # the loop finishes a search before anything else happens
            assert isinstance(item, FileSearchCallItem | WebSearchCallItem)
            item.status = "completed"
            found = event.search.results
            if isinstance(item, FileSearchCallItem):
                item.results = [
                    FileSearchResult(file_id=p.id, filename=p.title, score=p.score, text=p.text) for p in found
                ]
            elif self.sources:
                item.action.sources = [SearchSource(url=p.url or p.id) for p in found]
            self._open = None
            completed = self._about(ItemEvent, f"response.{item.type}.completed", item)
            return [completed, self._item("response.output_item.done", item)]
        assert isinstance(event, Done)
        return self._finish(event.reply)

    def _add(self, item: OutputItem) -> list[StreamEvent]:
        self.response.output.append(item)
        self._open = item
        return [self._item("response.output_item.added", item)]

    def _reasoning(self, text: str) -> list[StreamEvent]:
        if not text:
            return []
        out: list[StreamEvent] = []
        if not isinstance(self._open, ReasoningItem):
            out += self._close()
            item = ReasoningItem(id=_id("rs"), summary=[], status="in_progress")
            out += self._add(item)
            item.summary.append(SummaryText(text=""))
            part = SummaryText(text="")
            out.append(
                self._about(SummaryPartEvent, "response.reasoning_summary_part.added", item, summary_index=0, part=part)
            )
        item = self._open
        assert isinstance(item, ReasoningItem)
        item.summary[0].text += text
        delta = self._about(
            SummaryTextDelta, "response.reasoning_summary_text.delta", item, summary_index=0, delta=text
        )
        return [*out, delta]

    def _content(self, text: str) -> list[StreamEvent]:
        if not text:
            return []
        out = self._open_message() if not isinstance(self._open, MessageItem) else []
        item = self._open
        assert isinstance(item, MessageItem)
        item.content[0].text += text
        return [*out, self._about(OutputTextDelta, "response.output_text.delta", item, content_index=0, delta=text)]

    def _open_message(self) -> list[StreamEvent]:
        out = self._close()
        item = MessageItem(id=_id("msg"), status="in_progress", content=[])
        out += self._add(item)
        item.content.append(OutputText(text=""))
        part = OutputText(text="")
        return [*out, self._about(ContentPartEvent, "response.content_part.added", item, content_index=0, part=part)]

    def _close(self) -> list[StreamEvent]:
        """Finish the open reasoning or message item."""
        item, self._open = self._open, None
        if isinstance(item, ReasoningItem):
            item.status = "completed"
            summary = item.summary[0]
            return [
                self._about(
                    SummaryTextDone, "response.reasoning_summary_text.done", item, summary_index=0, text=summary.text
                ),
                self._about(
                    SummaryPartEvent,
                    "response.reasoning_summary_part.done",
                    item,
                    summary_index=0,
                    part=summary.model_copy(),
                ),
                self._item("response.output_item.done", item),
            ]
        if isinstance(item, MessageItem):
            part = item.content[0]
            return [
                self._about(OutputTextDone, "response.output_text.done", item, content_index=0, text=part.text),
                self._about(
                    ContentPartEvent,
                    "response.content_part.done",
                    item,
                    content_index=0,
                    part=part.model_copy(deep=True),
                ),
                self._item("response.output_item.done", item),
            ]
        return []

    def _finish(self, out: Reply) -> list[StreamEvent]:
        events = [] if isinstance(self._open, MessageItem) else self._open_message()
        message = self._open
        assert isinstance(message, MessageItem)
        text = message.content[0].text
        message.content[0].annotations = [
            URLCitation(url=c.url, title=c.title, start_index=0, end_index=len(text))
            if c.url
            else FileCitation(file_id=c.id, filename=c.title, index=len(text))
            for c in out.citations
        ]
        complete = out.finish_reason == "stop"
        message.status = "completed" if complete else "incomplete"
        events += self._close()
        u = out.usage
        assert u is not None
        self.response.usage = ResponseUsage(
            input_tokens=u.prompt_tokens, output_tokens=u.completion_tokens, total_tokens=u.total_tokens,
            retrieved_tokens=u.retrieved_tokens, searches=u.searches,
        )  # fmt: skip
        self.response.status = "completed" if complete else "incomplete"
        self.response.incomplete_details = None if complete else {"reason": "max_output_tokens"}
        self.response.answer = out.answer
        return [*events, self._lifecycle("response.completed" if complete else "response.incomplete")]


async def response_events(job: Job, events: AsyncIterator[Event], *, web: bool) -> AsyncIterator[StreamEvent]:
    """The Responses API stream for one run (``web``: its searches are web searches)."""
    builder = ResponseBuilder(job, web=web)
    for event in builder.start():
        yield event
    async for event in events:
        for out in builder.feed(event):
            yield out


async def response_object(job: Job, events: AsyncIterator[Event], *, web: bool) -> ResponseObject:
    """The whole response (non-streaming): the same items, built by the same code."""
    builder = ResponseBuilder(job, web=web)
    builder.start()
    async for event in events:
        builder.feed(event)
    return builder.response


# -- the route ----------------------------------------------------------------------------------


def router(generation: Generation) -> APIRouter:
    """``POST /v1/responses`` over ``generation``'s server."""
    routes = APIRouter(tags=["responses"])
    server = generation.server

    @routes.post("/v1/responses", responses=generation_responses(ResponseObject))
    async def responses(body: ResponsesRequest, request: Request) -> Response:
        server.check_model(body.model)
        job = server.job(body, await generation.chat_ids(request, body.messages()), "resp")
        if body.stream:
            return generation.stream(
                job,
                lambda events: (sse(e, e.type) async for e in response_events(job, events, web=server.searches_web)),
                done=False,
            )
        return await generation.reply(request, job, response_object(job, server.run(job), web=server.searches_web))

    return routes
