"""What the Responses API sends: output items, the response object and the stream events.

Shaped as the ``openai`` SDK types them (``ResponseReasoningItem``, ``ResponseFileSearchToolCall``,
``ResponseFunctionWebSearch``, ``ResponseOutputMessage``, the ``Response*Event`` family), so its ``responses.stream()``
accumulates our stream; :class:`~research.server.responses.ResponseBuilder` makes them.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class Tool(BaseModel):
    """A tool the request describes: ``web_search`` or ``file_search`` (what the server's loop does anyway)."""

    model_config = ConfigDict(extra="allow")
    type: str


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


OutputItem = ReasoningItem | FileSearchCallItem | WebSearchCallItem | MessageItem


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
    tools: list[Tool] = Field(default_factory=list)
    text: dict[str, Any] = Field(default_factory=lambda: {"format": {"type": "text"}})
    reasoning: dict[str, Any] | None = None
    store: bool = False
    metadata: dict[str, str] = Field(default_factory=dict)
    # -- extensions --
    answer: str | None = None


# -- stream events: one model per kind, as the openai SDK's ``Response*Event`` types have them --------


class _Event(BaseModel):
    type: str
    sequence_number: int


class _Lifecycle(_Event):
    response: ResponseObject


class ResponseCreated(_Lifecycle):
    type: Literal["response.created"] = "response.created"


class ResponseInProgress(_Lifecycle):
    type: Literal["response.in_progress"] = "response.in_progress"


class ResponseCompleted(_Lifecycle):
    type: Literal["response.completed"] = "response.completed"


class ResponseIncomplete(_Lifecycle):
    type: Literal["response.incomplete"] = "response.incomplete"


class _ItemEvent(_Event):
    output_index: int
    item: OutputItem


class OutputItemAdded(_ItemEvent):
    type: Literal["response.output_item.added"] = "response.output_item.added"


class OutputItemDone(_ItemEvent):
    type: Literal["response.output_item.done"] = "response.output_item.done"


class _AboutItem(_Event):
    """An event about one output item, named by its id and place."""

    item_id: str
    output_index: int


class FileSearchCallInProgress(_AboutItem):
    type: Literal["response.file_search_call.in_progress"] = "response.file_search_call.in_progress"


class FileSearchCallSearching(_AboutItem):
    type: Literal["response.file_search_call.searching"] = "response.file_search_call.searching"


class FileSearchCallCompleted(_AboutItem):
    type: Literal["response.file_search_call.completed"] = "response.file_search_call.completed"


class WebSearchCallInProgress(_AboutItem):
    type: Literal["response.web_search_call.in_progress"] = "response.web_search_call.in_progress"


class WebSearchCallSearching(_AboutItem):
    type: Literal["response.web_search_call.searching"] = "response.web_search_call.searching"


class WebSearchCallCompleted(_AboutItem):
    type: Literal["response.web_search_call.completed"] = "response.web_search_call.completed"


SEARCH_CALL_EVENTS: dict[str, tuple[type[_AboutItem], type[_AboutItem], type[_AboutItem]]] = {
    "file_search_call": (FileSearchCallInProgress, FileSearchCallSearching, FileSearchCallCompleted),
    "web_search_call": (WebSearchCallInProgress, WebSearchCallSearching, WebSearchCallCompleted),
}
"""A search item's events by its type: in progress, searching, completed."""


class _ContentPart(_AboutItem):
    content_index: int
    part: OutputText


class ContentPartAdded(_ContentPart):
    type: Literal["response.content_part.added"] = "response.content_part.added"


class ContentPartDone(_ContentPart):
    type: Literal["response.content_part.done"] = "response.content_part.done"


class OutputTextDelta(_AboutItem):
    type: Literal["response.output_text.delta"] = "response.output_text.delta"
    content_index: int
    delta: str
    logprobs: list[Any] = Field(default_factory=list)


class OutputTextDone(_AboutItem):
    type: Literal["response.output_text.done"] = "response.output_text.done"
    content_index: int
    text: str
    logprobs: list[Any] = Field(default_factory=list)


class _SummaryPart(_AboutItem):
    summary_index: int
    part: SummaryText


class SummaryPartAdded(_SummaryPart):
    type: Literal["response.reasoning_summary_part.added"] = "response.reasoning_summary_part.added"


class SummaryPartDone(_SummaryPart):
    type: Literal["response.reasoning_summary_part.done"] = "response.reasoning_summary_part.done"


class SummaryTextDelta(_AboutItem):
    type: Literal["response.reasoning_summary_text.delta"] = "response.reasoning_summary_text.delta"
    summary_index: int
    delta: str


class SummaryTextDone(_AboutItem):
    type: Literal["response.reasoning_summary_text.done"] = "response.reasoning_summary_text.done"
    summary_index: int
    text: str


StreamEvent = Annotated[
    ResponseCreated | ResponseInProgress | ResponseCompleted | ResponseIncomplete
    | OutputItemAdded | OutputItemDone
    | FileSearchCallInProgress | FileSearchCallSearching | FileSearchCallCompleted
    | WebSearchCallInProgress | WebSearchCallSearching | WebSearchCallCompleted
    | ContentPartAdded | ContentPartDone | OutputTextDelta | OutputTextDone
    | SummaryPartAdded | SummaryPartDone | SummaryTextDelta | SummaryTextDone,
    Field(discriminator="type"),
]  # fmt: skip
"""Every event of a Responses stream, told apart by ``type``."""
