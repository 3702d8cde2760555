"""The Responses API (``POST /v1/responses``) from the serving layer's events (:meth:`Server.run`).

A run becomes output items in the order they happen: a ``reasoning`` item for the
model's thinking up to each search (its text as the summary), one ``file_search_call``
item per search (the query, then the passages as results: ``file_id`` is the passage
id, ``filename`` its title), and the ``message`` whose ``output_text`` is the answer
text, with the passages it was given as ``file_citation`` annotations. Result blocks
fed back to the model are not repeated as reasoning: they are the search items' results.

:class:`ResponseBuilder` makes both the stream's events (the sequence the ``openai``
SDK's ``responses.stream()`` accumulates) and the final response object, so a
non-streaming reply is the same items built the same way.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

from research.server.protocol import (
    FileCitation,
    FileSearchCallItem,
    FileSearchResult,
    MessageItem,
    OutputItem,
    OutputText,
    ReasoningItem,
    ResponseObject,
    ResponsesRequest,
    ResponseUsage,
    SummaryText,
)
from research.server.serving import Job
from research.wire import Content, Done, Event, Reasoning, Reply, SearchDone, SearchIssued

StreamEvent = dict[str, Any]


def _id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


class ResponseBuilder:
    """Turns a run's events into Responses API stream events and output items."""

    def __init__(self, job: Job, model: str) -> None:
        body = job.body
        assert isinstance(body, ResponsesRequest)
        self.response = ResponseObject(
            id=job.request_id,
            created_at=job.created,
            status="in_progress",
            model=model,
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
    def _event(self, kind: str, **fields: Any) -> StreamEvent:
        event = {"type": kind, "sequence_number": self._sequence, **fields}
        self._sequence += 1
        return event

    def _item_event(self, kind: str, of: OutputItem, **fields: Any) -> StreamEvent:
        index = next(i for i, x in enumerate(self.response.output) if x is of)
        return self._event(kind, item_id=of.id, output_index=index, **fields)

    def start(self) -> list[StreamEvent]:
        snapshot = self.response.model_dump()
        return [
            self._event("response.created", response=snapshot),
            self._event("response.in_progress", response=snapshot),
        ]

    def feed(self, event: Event) -> list[StreamEvent]:
        """The stream events for one run event (the items grow as a side effect)."""
        if isinstance(event, Reasoning | Content):
            if event.retrieved:
                return []
            return self._reasoning(event.text) if isinstance(event, Reasoning) else self._content(event.text)
        if isinstance(event, SearchIssued):
            item = FileSearchCallItem(id=_id("fs"), status="in_progress", queries=[event.query])
            out = [*self._close(), *self._add(item), self._item_event("response.file_search_call.in_progress", item)]
            item.status = "searching"
            return [*out, self._item_event("response.file_search_call.searching", item)]
        if isinstance(event, SearchDone):
            item = self._open  # the loop finishes a search before anything else happens
            assert isinstance(item, FileSearchCallItem)
            item.status = "completed"
            item.results = [
                FileSearchResult(file_id=p.id, filename=p.title, score=p.score, text=p.text)
                for p in event.search.results
            ]
            done = self._item_event("response.output_item.done", item, item=item.model_dump())
            self._open = None
            return [self._item_event("response.file_search_call.completed", item), done]
        assert isinstance(event, Done)
        return self._finish(event.reply)

    def _add(self, item: OutputItem) -> list[StreamEvent]:
        self.response.output.append(item)
        self._open = item
        return [self._item_event("response.output_item.added", item, item=item.model_dump())]

    def _reasoning(self, text: str) -> list[StreamEvent]:
        if not text:
            return []
        out: list[StreamEvent] = []
        if not isinstance(self._open, ReasoningItem):
            out += self._close()
            item = ReasoningItem(id=_id("rs"), summary=[], status="in_progress")
            out += self._add(item)
            item.summary.append(SummaryText(text=""))
            part = SummaryText(text="").model_dump()
            out.append(self._item_event("response.reasoning_summary_part.added", item, summary_index=0, part=part))
        assert isinstance(self._open, ReasoningItem)
        self._open.summary[0].text += text
        delta = self._item_event("response.reasoning_summary_text.delta", self._open, summary_index=0, delta=text)
        return [*out, delta]

    def _content(self, text: str) -> list[StreamEvent]:
        if not text:
            return []
        out = self._open_message() if not isinstance(self._open, MessageItem) else []
        assert isinstance(self._open, MessageItem)
        self._open.content[0].text += text
        delta = self._item_event("response.output_text.delta", self._open, content_index=0, delta=text, logprobs=[])
        return [*out, delta]

    def _open_message(self) -> list[StreamEvent]:
        out = self._close()
        item = MessageItem(id=_id("msg"), status="in_progress", content=[])
        out += self._add(item)
        item.content.append(OutputText(text=""))
        part = OutputText(text="").model_dump()
        return [*out, self._item_event("response.content_part.added", item, content_index=0, part=part)]

    def _close(self) -> list[StreamEvent]:
        """Finish the open reasoning or message item."""
        item, self._open = self._open, None
        if isinstance(item, ReasoningItem):
            item.status = "completed"
            text = item.summary[0].text
            return [
                self._item_event("response.reasoning_summary_text.done", item, summary_index=0, text=text),
                self._item_event(
                    "response.reasoning_summary_part.done", item, summary_index=0, part=item.summary[0].model_dump()
                ),
                self._item_event("response.output_item.done", item, item=item.model_dump()),
            ]
        if isinstance(item, MessageItem):
            part = item.content[0]
            return [
                self._item_event("response.output_text.done", item, content_index=0, text=part.text, logprobs=[]),
                self._item_event("response.content_part.done", item, content_index=0, part=part.model_dump()),
                self._item_event("response.output_item.done", item, item=item.model_dump()),
            ]
        return []

    def _finish(self, out: Reply) -> list[StreamEvent]:
        events = [] if isinstance(self._open, MessageItem) else self._open_message()
        message = self._open
        assert isinstance(message, MessageItem)
        text = message.content[0].text
        message.content[0].annotations = [
            FileCitation(file_id=c.id, filename=c.title, index=len(text)) for c in out.citations
        ]
        complete = out.finish_reason == "stop"
        message.status = "completed" if complete else "incomplete"
        events += self._close()
        u = out.usage
        self.response.usage = ResponseUsage(
            input_tokens=u.prompt_tokens, output_tokens=u.completion_tokens, total_tokens=u.total_tokens,
            retrieved_tokens=u.retrieved_tokens, searches=u.searches,
        )  # fmt: skip
        self.response.status = "completed" if complete else "incomplete"
        self.response.incomplete_details = None if complete else {"reason": "max_output_tokens"}
        self.response.answer = out.answer
        kind = "response.completed" if complete else "response.incomplete"
        return [*events, self._event(kind, response=self.response.model_dump())]


async def response_events(job: Job, events: AsyncIterator[Event], model: str) -> AsyncIterator[StreamEvent]:
    """The Responses API stream for one run."""
    builder = ResponseBuilder(job, model)
    for event in builder.start():
        yield event
    async for event in events:
        for out in builder.feed(event):
            yield out


async def response_object(job: Job, events: AsyncIterator[Event], model: str) -> ResponseObject:
    """The whole response (non-streaming): the same items, built by the same code."""
    builder = ResponseBuilder(job, model)
    builder.start()
    async for event in events:
        builder.feed(event)
    return builder.response
