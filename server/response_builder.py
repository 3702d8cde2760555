"""A run's events as the Responses API's output items and stream events (:mod:`research.server.response_items`).

A run becomes output items in the order they happen: a ``reasoning`` item for the
model's thinking up to each search (its text as the summary), one ``file_search_call``
item per search (the query, then the passages as results: ``file_id`` is the passage
id, ``filename`` its title), and the ``message`` whose ``output_text`` is the answer
text, with the passages it was given as ``file_citation`` annotations. Searching the web,
each search is a ``web_search_call`` item instead (the query; the pages' URLs as
``action.sources`` when asked for) and the pages are ``url_citation`` annotations. Result
blocks fed back to the model are not repeated as reasoning: they are the search items' results.

:class:`ResponseBuilder` makes both the stream's events (the sequence the ``openai`` SDK's
``responses.stream()`` accumulates) and the final response object, so a non-streaming reply
is the same items built the same way.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

from research.server.response_items import (
    SEARCH_CALL_EVENTS,
    ArgumentsDelta,
    ArgumentsDone,
    ContentPartAdded,
    ContentPartDone,
    FileCitation,
    FileSearchCallItem,
    FileSearchResult,
    FunctionCallItem,
    MessageItem,
    OutputItem,
    OutputItemAdded,
    OutputItemDone,
    OutputText,
    OutputTextDelta,
    OutputTextDone,
    ReasoningItem,
    ResponseCompleted,
    ResponseCreated,
    ResponseIncomplete,
    ResponseInProgress,
    ResponseObject,
    ResponseUsage,
    SearchSource,
    StreamEvent,
    SummaryPartAdded,
    SummaryPartDone,
    SummaryText,
    SummaryTextDelta,
    SummaryTextDone,
    URLCitation,
    WebSearchAction,
    WebSearchCallItem,
)
from research.wire import Content, Done, Event, Reasoning, Reply, SearchDone, SearchIssued, TokenLogprob

SearchItem = FileSearchCallItem | WebSearchCallItem


def _id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


class ResponseBuilder:
    """Turns a run's events into Responses API stream events, growing ``response``'s output items as it goes.

    The item being written is the last one while its status is ``in_progress`` or ``searching``; events carry
    snapshots (copies) of the items and the response.
    """

    def __init__(self, response: ResponseObject, *, web: bool = False, sources: bool = False) -> None:
        self.response = response
        self.web = web
        """Searches are ``web_search_call`` items (else ``file_search_call``)."""
        self.sources = sources
        """Web search items list the pages found (``include``: ``web_search_call.action.sources``)."""
        self._sequence = 0

    # -- event helpers -------------------------------------------------------
    def _next(self) -> int:
        self._sequence += 1
        return self._sequence - 1

    def _index(self, item: OutputItem) -> int:
        return next(i for i, x in enumerate(self.response.output) if x is item)

    def _about(self, item: OutputItem) -> dict[str, object]:
        """The fields every event about ``item`` has, its sequence number taken now."""
        return {"sequence_number": self._next(), "item_id": item.id, "output_index": self._index(item)}

    def _item_done(self, item: OutputItem) -> OutputItemDone:
        return OutputItemDone(
            sequence_number=self._next(), output_index=self._index(item), item=item.model_copy(deep=True)
        )

    @property
    def _open(self) -> OutputItem | None:
        """The item being written: the last, while it is in progress."""
        last = self.response.output[-1] if self.response.output else None
        return last if last is not None and last.status in ("in_progress", "searching") else None

    # -- the run's events ----------------------------------------------------
    def start(self) -> list[StreamEvent]:
        snapshot = self.response.model_copy
        return [
            ResponseCreated(sequence_number=self._next(), response=snapshot(deep=True)),
            ResponseInProgress(sequence_number=self._next(), response=snapshot(deep=True)),
        ]

    def feed(self, event: Event) -> list[StreamEvent]:
        """The stream events for one run event (the items grow as a side effect)."""
        if isinstance(event, Reasoning | Content):
            if event.retrieved or not event.text:
                return []
            if isinstance(event, Reasoning):
                return self._reasoning(event.text)
            return self._content(event.text, event.logprobs.content or [] if event.logprobs else None)
        if isinstance(event, SearchIssued):
            return self._search_issued(event.query)
        if isinstance(event, SearchDone):
            return self._search_done(event)
        assert isinstance(event, Done)
        return self._finish(event.reply)

    def _add(self, item: OutputItem) -> list[StreamEvent]:
        """Close the item being written and start ``item``."""
        out = self._close()
        self.response.output.append(item)
        return [
            *out,
            OutputItemAdded(
                sequence_number=self._next(), output_index=self._index(item), item=item.model_copy(deep=True)
            ),
        ]

    def _search_issued(self, query: str) -> list[StreamEvent]:
        item: SearchItem = (
            WebSearchCallItem(id=_id("ws"), status="in_progress", action=WebSearchAction(query=query))
            if self.web
            else FileSearchCallItem(id=_id("fs"), status="in_progress", queries=[query])
        )
        in_progress, searching, _ = SEARCH_CALL_EVENTS[item.type]
        out = [*self._add(item), in_progress(**self._about(item))]
        item.status = "searching"
        return [*out, searching(**self._about(item))]

    def _search_done(self, event: SearchDone) -> list[StreamEvent]:
        item = self._open  # the loop finishes a search before anything else happens
        assert isinstance(item, FileSearchCallItem | WebSearchCallItem)
        item.status = "completed"
        found = event.search.results
        if isinstance(item, FileSearchCallItem):
            item.results = [FileSearchResult(file_id=p.id, filename=p.title, score=p.score, text=p.text) for p in found]
        elif self.sources:
            item.action.sources = [SearchSource(url=p.url or p.id) for p in found]
        completed = SEARCH_CALL_EVENTS[item.type][2]
        return [completed(**self._about(item)), self._item_done(item)]

    def _reasoning(self, text: str) -> list[StreamEvent]:
        out: list[StreamEvent] = []
        item = self._open
        if not isinstance(item, ReasoningItem):
            item = ReasoningItem(id=_id("rs"), summary=[], status="in_progress")
            out += self._add(item)
            item.summary.append(SummaryText(text=""))
            out.append(SummaryPartAdded(**self._about(item), summary_index=0, part=SummaryText(text="")))
        item.summary[0].text += text
        return [*out, SummaryTextDelta(**self._about(item), summary_index=0, delta=text)]

    def _content(self, text: str, logprobs: list[TokenLogprob] | None) -> list[StreamEvent]:
        item = self._open
        out = [] if isinstance(item, MessageItem) else self._open_message()
        item = self._open
        assert isinstance(item, MessageItem)
        item.content[0].text += text
        item.content[0].logprobs += logprobs or []
        return [*out, OutputTextDelta(**self._about(item), content_index=0, delta=text, logprobs=logprobs or [])]

    def _open_message(self) -> list[StreamEvent]:
        item = MessageItem(id=_id("msg"), status="in_progress", content=[])
        out = self._add(item)
        item.content.append(OutputText(text=""))
        return [*out, ContentPartAdded(**self._about(item), content_index=0, part=OutputText(text=""))]

    def _close(self, item: OutputItem | None = None) -> list[StreamEvent]:
        """Finish ``item`` (default: the reasoning or message item being written)."""
        item = self._open if item is None else item
        if isinstance(item, ReasoningItem):
            item.status = "completed"
            summary = item.summary[0]
            return [
                SummaryTextDone(**self._about(item), summary_index=0, text=summary.text),
                SummaryPartDone(**self._about(item), summary_index=0, part=summary.model_copy()),
                self._item_done(item),
            ]
        if isinstance(item, MessageItem):
            part = item.content[0]
            return [
                OutputTextDone(**self._about(item), content_index=0, text=part.text),
                ContentPartDone(**self._about(item), content_index=0, part=part.model_copy(deep=True)),
                self._item_done(item),
            ]
        return []

    def _calls(self, out: Reply) -> list[StreamEvent]:
        """The client's functions the model called, one ``function_call`` item each (its arguments in one delta)."""
        events = []
        for call in out.tool_calls:
            item = FunctionCallItem(id=_id("fc"), call_id=call.id, name=call.name, arguments="", status="in_progress")
            events += self._add(item)
            item.arguments, item.status = call.arguments, "completed"
            events += [
                ArgumentsDelta(**self._about(item), delta=call.arguments),
                ArgumentsDone(**self._about(item), name=call.name, arguments=call.arguments),
                self._item_done(item),
            ]
        return events

    def _finish(self, out: Reply) -> list[StreamEvent]:
        if out.tool_calls and not isinstance(self._open, MessageItem):  # calls only: no message, as OpenAI's
            events = [*self._close(), *self._calls(out)]
            return [*events, *self._end(out, complete=True)]
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
        complete = out.finish_reason in ("stop", "tool_calls")
        message.status = "completed" if complete else "incomplete"
        events += [*self._close(message), *self._calls(out)]
        return [*events, *self._end(out, complete=complete)]

    def _end(self, out: Reply, *, complete: bool) -> list[StreamEvent]:
        """The response's usage and status, and its last event."""
        u = out.usage
        assert u is not None
        self.response.usage = ResponseUsage(
            input_tokens=u.prompt_tokens, output_tokens=u.completion_tokens, total_tokens=u.total_tokens,
            retrieved_tokens=u.retrieved_tokens, searches=u.searches,
        )  # fmt: skip
        self.response.status = "completed" if complete else "incomplete"
        self.response.incomplete_details = None if complete else {"reason": "max_output_tokens"}
        self.response.answer = out.answer
        end = ResponseCompleted if complete else ResponseIncomplete
        return [end(sequence_number=self._next(), response=self.response.model_copy(deep=True))]


async def response_events(builder: ResponseBuilder, events: AsyncIterator[Event]) -> AsyncIterator[StreamEvent]:
    """The Responses API stream for one run."""
    for event in builder.start():
        yield event
    async for event in events:
        for out in builder.feed(event):
            yield out
