"""What every generation API shares once its request is valid: reply whole or stream, and fail cleanly.

Each API has one serving object, an :class:`OpenAIServing` (:class:`~research.server.chat.ChatServing`,
:class:`~research.server.completions.CompletionServing`, :class:`~research.server.responses.ResponsesServing`),
that its route calls once with the request: it renders the prompt, makes a
:class:`~research.server.serving.Job` on the shared :class:`~research.server.serving.Server`, and
answers with :meth:`OpenAIServing.reply` (a whole reply, cancelled if the client goes away) or
:meth:`OpenAIServing.stream` (server-sent events; a failure after the headers is an error event, as vLLM does).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import aclosing, suppress
from functools import partial
from typing import Any, ClassVar

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel

from research.http_errors import APIError, StrictJSONResponse, error_body, errors, json_bytes
from research.retrieval import RetrieverUnavailable, SearchTimeout, search_error
from research.server.middleware import TimedStream
from research.server.requests import FunctionTool, Message, SamplingFields
from research.server.serving import Job, Server
from research.wire import Done, Event, Reply

log = logging.getLogger("research.server")

Chunks = Callable[[AsyncIterator[Event]], AsyncIterator[bytes]]
"""A run's events as server-sent events."""


def sse(data: BaseModel | dict[str, Any] | str, event: str | None = None) -> bytes:
    """One server-sent event (``data: [DONE]`` for a string)."""
    if isinstance(data, BaseModel):
        data = data.model_dump(mode="json")
    payload = data.encode() if isinstance(data, str) else json_bytes(data)
    return (f"event: {event}\n" if event else "").encode() + b"data: " + payload + b"\n\n"


SSE_EVENT = {
    "type": "object",
    "description": "One server-sent event (OpenAPI 3.1: the schema of a text/event-stream is each event's): `data` "
    "is a chunk or stream event as JSON, or `[DONE]`; `event` is the Responses API's event type",
    "properties": {"data": {"type": "string"}, "event": {"type": "string"}},
    "required": ["data"],
}


def generation_responses(model: type[BaseModel]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI responses of a generation route: its reply (or stream) and every error it can give."""
    stream = {"text/event-stream": {"schema": SSE_EVENT}}
    reply = {"model": model, "content": stream, "description": 'The reply; with "stream": true, server-sent events'}
    return {200: reply, **errors(404, 429, 503, 504)}


class ClientDisconnected(Exception):
    """The client went away before its reply was ready (not an error of ours)."""


async def _until_disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def cancel_on_disconnect(request: Request, work: Awaitable[Any]) -> Any:
    """Run ``work``; if the client goes away first, cancel it (which aborts generation)."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_until_disconnected(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
    if not task.done() or task.cancelled():
        with suppress(asyncio.CancelledError):
            await task  # let the cancellation finish (the engine aborts the request)
        log.info("client disconnected; request cancelled")
        raise ClientDisconnected
    return task.result()


def size(request: Request) -> int | None:
    """The request body's declared size in bytes (None when sent chunked)."""
    declared = request.headers.get("content-length", "")
    return int(declared) if declared.isdigit() else None


def failure(server: Server, job: Job, exc: Exception) -> APIError:
    """The error a client gets when its search loop fails: a failed search as every search route says it
    (:func:`~research.retrieval.search_error`: 504 past the timeout, 503 naming a retriever that is down or
    misbehaved), else 503 ``search_loop_failed``, its cause (paths, library internals) logged with the request
    id, never sent."""
    if isinstance(exc, SearchTimeout | RetrieverUnavailable):
        return search_error(exc, job.request_id, server.retriever)
    log.error("the search loop failed", exc_info=exc, extra={"request_id": job.request_id})
    message = f"the search loop failed (request {job.request_id}); the server log has the cause"
    return APIError(503, message, code="search_loop_failed", headers={"x-request-id": job.request_id})


def rendered(job: Job, body: BaseModel) -> Response:
    """``job``'s whole reply as strict JSON; a reply that cannot be written is a 500 that says why, never a
    traceback's generic 500."""
    try:
        content = body.model_dump(mode="json")
    except Exception as exc:
        log.error("the reply could not be written", exc_info=exc, extra={"request_id": job.request_id})
        raise APIError(
            500, f"the reply could not be written as JSON ({type(exc).__name__}: {exc}) (request {job.request_id})",
            code="reply_not_serializable", headers={"x-request-id": job.request_id},
        ) from exc  # fmt: skip
    return StrictJSONResponse(content, headers={"x-request-id": job.request_id})


class OpenAIServing:
    """One generation API over the shared :class:`Server`: its route calls :meth:`create` once per request.

    A subclass says how its prompt is made (:meth:`prompt`), how its events are streamed (:meth:`chunks`) and
    what its whole reply is (:meth:`whole`).
    """

    prefix: ClassVar[str]
    """The request ids' prefix (``chatcmpl-``, ``cmpl-``, ``resp_``: OpenAI's)."""
    ends_with_done: ClassVar[bool] = True
    """Its stream ends with ``data: [DONE]`` (chat and text completions; the Responses API's does not)."""

    def __init__(self, server: Server) -> None:
        self.server = server

    async def create(self, body: SamplingFields, request: Request) -> Response:
        """Check the model, render the prompt, check the request against the server's limits, then stream or reply."""
        self.server.check_model(body.model)
        job = self.server.job(body, await self.prompt(body, request), self.prefix)
        if body.stream:
            return self.stream(job)
        return await self.reply(request, job, self.whole(job))

    async def prompt(self, body: Any, request: Request) -> list[int]:
        """The prompt's token ids."""
        raise NotImplementedError

    def chunks(self, job: Job, events: AsyncIterator[Event]) -> AsyncIterator[bytes]:
        """The stream's server-sent events for the run's ``events``."""
        raise NotImplementedError

    async def whole(self, job: Job) -> BaseModel:
        """The whole reply (non-streaming)."""
        raise NotImplementedError

    async def chat_prompt(
        self, request: Request, messages: Sequence[Message], tools: Sequence[FunctionTool] = ()
    ) -> list[int]:
        """The chat prompt's token ids (:meth:`Server.chat_ids`), the request's size telling how to tokenise."""
        return await self.server.chat_ids(messages, size(request), tools)

    async def final(self, job: Job) -> list[Reply]:
        """Run ``job`` to the end: each choice's :class:`Reply`, in order (what non-streaming replies render)."""
        async with aclosing(self.server.run(job)) as events:
            replies = [event.reply async for event in events if isinstance(event, Done)]
        if len(replies) != job.n:
            raise AssertionError(f"the search loops ended with {len(replies)} replies for {job.n} choices")
        return sorted(replies, key=lambda reply: reply.index)

    async def reply(self, request: Request, job: Job, work: Awaitable[BaseModel]) -> Response:
        """``job``'s whole reply as ``work`` makes it; 499 if the client left, 503/504 if the loop failed."""
        try:
            body = await cancel_on_disconnect(request, work)
        except ClientDisconnected:
            return Response(status_code=499, headers={"x-request-id": job.request_id})  # nginx's "client closed"
        except Exception as exc:
            raise failure(self.server, job, exc) from exc
        finally:
            self.server.metrics.request_seconds.observe(time.perf_counter() - job.started)
        return rendered(job, body)

    def stream(self, job: Job, chunks: Chunks | None = None) -> TimedStream:
        """Stream ``job``'s events as ``chunks`` (default :meth:`chunks`) renders them, then ``data: [DONE]`` where
        the API has it."""
        server, done, chunks = self.server, self.ends_with_done, chunks or partial(self.chunks, job)

        async def body() -> AsyncIterator[bytes]:
            try:
                async with aclosing(server.run(job)) as events:  # closing it aborts generation
                    async for chunk in chunks(events):
                        yield chunk
            except Exception as exc:
                error = failure(server, job, exc)
                payload = error_body(error.status, error.message, code=error.code)
                yield sse({"type": "error", **payload}, "error") if not done else sse(payload)
            finally:
                server.metrics.request_seconds.observe(time.perf_counter() - job.started)
            if done:
                yield sse("[DONE]")

        headers = {"x-request-id": job.request_id}
        return TimedStream(body(), write_timeout=server.config.stream_write_timeout, headers=headers)


def api_router(serving: OpenAIServing, path: str, request_model: type[BaseModel], reply_model: type[BaseModel],
               *, name: str, tag: str) -> APIRouter:  # fmt: skip
    """``POST path``: ``request_model`` validated (a 400 in OpenAI's shape otherwise), then ``serving.create``."""
    routes = APIRouter(tags=[tag])

    async def endpoint(body: Any, request: Request) -> Response:
        return await serving.create(body, request)

    endpoint.__annotations__ = {"body": request_model, "request": Request, "return": Response}
    routes.add_api_route(path, endpoint, methods=["POST"], name=name, responses=generation_responses(reply_model))
    return routes
