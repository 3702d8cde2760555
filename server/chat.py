"""Chat and text completions from the serving layer's events (:meth:`Server.run`).

Streaming chunks carry the text as it comes (``delta.reasoning``/``reasoning_content``
before ``<answer>``, ``delta.content`` after), every search as an entry of
``delta.searches`` with an ``index``, the query first and then, under the same index,
only the results (so the ``openai`` SDK's accumulator rebuilds each search whole, as it
does ``tool_calls``), and the answer and citations on the last choice chunk.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from research.server.protocol import (
    ChatChoice,
    ChatChunkChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatDelta,
    ChatMessageOut,
    Completion,
    CompletionChoice,
)
from research.server.serving import Job
from research.wire import Content, Done, Event, Reasoning, Reply, SearchDelta, SearchDone, SearchIssued


def _shows_reasoning(job: Job) -> bool:
    body = job.body
    return not job.raw and not (isinstance(body, ChatCompletionRequest) and body.include_reasoning is False)


def chat_completion(job: Job, out: Reply) -> ChatCompletion:
    reasoning = out.reasoning if _shows_reasoning(job) else None
    message = ChatMessageOut(
        content=out.content,
        reasoning=reasoning,
        reasoning_content=reasoning,
        answer=out.answer,
        searches=out.searches,
        citations=out.citations,
    )
    choice = ChatChoice(message=message, finish_reason=out.finish_reason, stop_reason=out.stop_reason)
    return ChatCompletion(id=job.request_id, created=job.created, model=out.model, choices=[choice], usage=out.usage)


def _delta(job: Job, event: Event) -> ChatDelta | None:
    """The chat delta of one event (None: nothing to send)."""
    if isinstance(event, Reasoning):
        return ChatDelta(reasoning=event.text, reasoning_content=event.text) if _shows_reasoning(job) else None
    if isinstance(event, Content):
        return ChatDelta(content=event.text)
    if isinstance(event, SearchIssued):
        return ChatDelta(searches=[SearchDelta(index=event.index, query=event.query)])
    if isinstance(event, SearchDone):
        return ChatDelta(searches=[SearchDelta(index=event.search.index, results=event.search.results)])
    assert isinstance(event, Done)
    return ChatDelta(answer=event.reply.answer, citations=event.reply.citations)


async def chat_chunks(job: Job, events: AsyncIterator[Event], model: str) -> AsyncIterator[ChatCompletionChunk]:
    """The stream of ``chat.completion.chunk``s, usage last when asked for."""

    def chunk(choices: list[ChatChunkChoice], **extra) -> ChatCompletionChunk:
        return ChatCompletionChunk(id=job.request_id, created=job.created, model=model, choices=choices, **extra)

    yield chunk([ChatChunkChoice(delta=ChatDelta(role="assistant", content=""))])
    async for event in events:
        delta = _delta(job, event)
        if isinstance(event, Done):
            assert delta is not None
            end = event.reply
            yield chunk([ChatChunkChoice(delta=delta, finish_reason=end.finish_reason, stop_reason=end.stop_reason)])
            if job.body.stream_options and job.body.stream_options.include_usage:
                yield chunk([], usage=end.usage)
        elif delta is not None:
            yield chunk([ChatChunkChoice(delta=delta)])


def completion(job: Job, out: Reply) -> Completion:
    choice = CompletionChoice(
        text=out.content,
        finish_reason=out.finish_reason,
        stop_reason=out.stop_reason,
        searches=out.searches,
        answer=out.answer,
        citations=out.citations,
    )
    return Completion(id=job.request_id, created=job.created, model=out.model, choices=[choice], usage=out.usage)


async def completion_chunks(job: Job, events: AsyncIterator[Event], model: str) -> AsyncIterator[Completion]:
    """The stream of ``text_completion`` chunks: text, ``searches`` deltas, the answer last."""

    def chunk(choices: list[CompletionChoice], **extra) -> Completion:
        return Completion(id=job.request_id, created=job.created, model=model, choices=choices, **extra)

    async for event in events:
        if isinstance(event, Content):
            yield chunk([CompletionChoice(text=event.text, finish_reason=None)])
        elif isinstance(event, SearchIssued | SearchDone):
            delta = _delta(job, event)
            assert delta is not None
            yield chunk([CompletionChoice(text="", finish_reason=None, searches=delta.searches)])
        elif isinstance(event, Done):
            end = event.reply
            final = CompletionChoice(
                text="", finish_reason=end.finish_reason, stop_reason=end.stop_reason,
                answer=end.answer, citations=end.citations,
            )  # fmt: skip
            yield chunk([final])
            if job.body.stream_options and job.body.stream_options.include_usage:
                yield chunk([], usage=end.usage)
