"""What the Responses API sends: output items, the response object and the stream events.

Shaped as the ``openai`` SDK types them (``ResponseReasoningItem``, ``ResponseFileSearchToolCall``,
``ResponseFunctionWebSearch``, ``ResponseOutputMessage``, the ``Response*Event`` family), so its ``responses.stream()``
accumulates our stream; :class:`~research.server.responses.ResponseBuilder` makes them.
"""

from __future__ import annotations

import re
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, create_model


class Tool(BaseModel):
    """A tool the request describes: ``web_search`` or ``file_search`` (what the server's loop does anyway), or,
    for a ReCall model, a ``function`` of the client's (``name``, ``description``, ``parameters``, ``strict``)."""

    model_config = ConfigDict(extra="allow")
    type: str

    def as_chat_tool(self) -> dict[str, Any]:
        """A ``function`` tool in chat's shape (``{"type": "function", "function": {...}}``)."""
        return {"type": "function", "function": self.model_dump(exclude={"type"})}


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


class SearchSource(BaseModel):
    type: Literal["url"] = "url"
    url: str


class WebSearchAction(BaseModel):
    type: Literal["search"] = "search"
    query: str
    sources: list[SearchSource] | None = None
    """The pages found, when the request's ``include`` has ``web_search_call.action.sources``."""


class WebSearchCallItem(BaseModel):
    """One search of the loop on the web (``--web-search``): the query the model wrote and, when asked, the pages."""

    id: str
    type: Literal["web_search_call"] = "web_search_call"
    status: Literal["in_progress", "searching", "completed"]
    action: WebSearchAction


class FileCitation(BaseModel):
    type: Literal["file_citation"] = "file_citation"
    file_id: str
    filename: str
    index: int


class URLCitation(BaseModel):
    """A web page the answer was given, over the whole text."""

    type: Literal["url_citation"] = "url_citation"
    url: str
    title: str
    start_index: int
    end_index: int


class OutputText(BaseModel):
    type: Literal["output_text"] = "output_text"
    text: str
    annotations: list[FileCitation | URLCitation] = Field(default_factory=list)
    logprobs: list[Any] = Field(default_factory=list)


class MessageItem(BaseModel):
    id: str
    type: Literal["message"] = "message"
    role: Literal["assistant"] = "assistant"
    status: Literal["in_progress", "completed", "incomplete"]
    content: list[OutputText]


class FunctionCallItem(BaseModel):
    """A call of one of the client's functions: the client runs it and sends a ``function_call_output``."""

    id: str
    type: Literal["function_call"] = "function_call"
    call_id: str
    name: str
    arguments: str
    status: Literal["in_progress", "completed"]


OutputItem = ReasoningItem | FileSearchCallItem | WebSearchCallItem | MessageItem | FunctionCallItem


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
    """The response, whole (non-streaming) or as the stream's lifecycle events carry it."""

    id: str
    object: Literal["response"] = "response"
    created_at: int
    status: Literal["queued", "in_progress", "completed", "incomplete", "failed", "cancelled"]
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
    tools: list[Tool] = Field(default_factory=list)
    text: dict[str, Any] = Field(default_factory=lambda: {"format": {"type": "text"}})
    reasoning: dict[str, Any] | None = None
    store: bool = True
    background: bool = False
    previous_response_id: str | None = None
    conversation: dict[str, str] | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    # -- extensions --
    answer: str | None = None


# -- stream events: one model per kind, as the openai SDK's ``Response*Event`` types have them --------


class _Event(BaseModel):
    type: str
    sequence_number: int


class _Lifecycle(_Event):
    response: ResponseObject


class _ItemEvent(_Event):
    output_index: int
    item: OutputItem


class _AboutItem(_Event):
    """An event about one output item, named by its id and place."""

    item_id: str
    output_index: int


class _ContentPart(_AboutItem):
    content_index: int
    part: OutputText


class _TextDelta(_AboutItem):
    content_index: int
    delta: str
    logprobs: list[Any] = Field(default_factory=list)


class _TextDone(_AboutItem):
    content_index: int
    text: str
    logprobs: list[Any] = Field(default_factory=list)


class _SummaryPart(_AboutItem):
    summary_index: int
    part: SummaryText


class _SummaryDelta(_AboutItem):
    summary_index: int
    delta: str


class _SummaryDone(_AboutItem):
    summary_index: int
    text: str


class _ArgumentsDelta(_AboutItem):
    delta: str


class _ArgumentsDone(_AboutItem):
    name: str
    arguments: str


E = TypeVar("E", bound=_Event)


def _kind(base: type[E], kind: str) -> type[E]:
    """The model of the event ``kind``: ``base``'s fields, ``type`` fixed to ``kind`` (``response.created`` is
    ``ResponseCreated``)."""
    name = "".join(word.title() for word in re.split(r"[._]", kind))
    return create_model(name, __base__=base, type=(Literal[kind], kind))


ResponseCreated, ResponseInProgress, ResponseCompleted, ResponseIncomplete = (
    _kind(_Lifecycle, f"response.{state}") for state in ("created", "in_progress", "completed", "incomplete")
)
OutputItemAdded, OutputItemDone = (_kind(_ItemEvent, f"response.output_item.{end}") for end in ("added", "done"))
SEARCH_CALL_EVENTS = {
    item: tuple(_kind(_AboutItem, f"response.{item}.{step}") for step in ("in_progress", "searching", "completed"))
    for item in ("file_search_call", "web_search_call")
}
"""A search item's events by the item's type: in progress, searching, completed."""
ContentPartAdded, ContentPartDone = (_kind(_ContentPart, f"response.content_part.{end}") for end in ("added", "done"))
OutputTextDelta = _kind(_TextDelta, "response.output_text.delta")
OutputTextDone = _kind(_TextDone, "response.output_text.done")
SummaryPartAdded, SummaryPartDone = (
    _kind(_SummaryPart, f"response.reasoning_summary_part.{end}") for end in ("added", "done")
)
SummaryTextDelta = _kind(_SummaryDelta, "response.reasoning_summary_text.delta")
SummaryTextDone = _kind(_SummaryDone, "response.reasoning_summary_text.done")
ArgumentsDelta = _kind(_ArgumentsDelta, "response.function_call_arguments.delta")
ArgumentsDone = _kind(_ArgumentsDone, "response.function_call_arguments.done")

StreamEvent = _Event
"""Every event of a Responses stream: one of the models above, told apart by ``type``."""
