"""The OpenAI-compatible app: thin routers over the serving layer (:mod:`research.server.serving`).

Routes validate the request (:mod:`research.server.protocol`), render its prompt, make a
:class:`Job` and hand it to the renderer of their API (:mod:`research.server.chat`,
:mod:`research.server.responses`); :meth:`Server.run` is where the search loop's events
become API output for all of them.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing, asynccontextmanager, suppress
from functools import partial
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel

from research.http_errors import APIError, BodyLimit, error_body, errors, install_error_handlers
from research.retrieval import dropin_router, v1_search_router
from research.server.chat import chat_chunks, chat_completion, completion, completion_chunks
from research.server.middleware import Admission, RequestLog, TimedStream
from research.server.protocol import (
    ChatCompletion,
    ChatCompletionRequest,
    Completion,
    CompletionRequest,
    ResponseObject,
    ResponsesRequest,
)
from research.server.render import chat_prompt
from research.server.responses import response_events, response_object
from research.server.serving import Job, SearchTimeout, Server, ServerConfig
from research.wire import Event, Health, ModelCard, ModelList

__all__ = ["Server", "ServerConfig", "create_app"]

log = logging.getLogger("research.server")

PLAYGROUND = Path(__file__).parent / "static" / "playground.html"
"""The browser playground served at ``/``: one static page on the public streaming API."""


def sse(data: BaseModel | dict[str, Any] | str, event: str | None = None) -> bytes:
    """One server-sent event (``data: [DONE]`` for a string)."""
    if isinstance(data, BaseModel):
        data = data.model_dump(mode="json")
    payload = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    return (f"event: {event}\n" if event else "").encode() + f"data: {payload}\n\n".encode()


async def _until_disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


class ClientDisconnected(Exception):
    """The client went away before its reply was ready (not an error of ours)."""


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


def create_app(server: Server) -> FastAPI:
    """The FastAPI app: OpenAI routes, the retriever's routes, the playground, health and metrics.

    Its lifespan closes ``server`` (engine and retriever) at shutdown: uvicorn re-raises
    SIGTERM/SIGINT once it stops, so code after ``serve()`` never runs, and a vLLM engine
    left open would outlive the process.
    """
    cfg = server.config

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await server.close()

    # No /docs or /redoc: their pages load Swagger UI from a CDN and are blank offline.
    # The API is documented in openai_compat.md; the schema stays at /openapi.json.
    app = FastAPI(title="ReSearch server", lifespan=lifespan, docs_url=None, redoc_url=None)
    install_error_handlers(app)
    # Outermost last: the log sees every request; CORS headers reach a 429 too; an over-large body is refused
    # before it takes a slot.
    app.add_middleware(Admission, server=server)
    app.add_middleware(BodyLimit, max_bytes=cfg.max_request_bytes)
    if cfg.allowed_origins:
        app.add_middleware(
            CORSMiddleware, allow_origins=list(cfg.allowed_origins), allow_methods=["*"], allow_headers=["*"],
            expose_headers=["x-request-id"],
        )  # fmt: skip
    app.add_middleware(RequestLog, metrics=server.metrics)

    async def authorize(request: Request) -> None:
        if not cfg.api_key:
            return
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(key.strip().encode(), cfg.api_key.encode()):
            raise APIError(
                401, "missing or wrong API key: send 'Authorization: Bearer <key>'", code="invalid_api_key",
                headers={"WWW-Authenticate": "Bearer"},
            )  # fmt: skip

    keyed = errors(401) if cfg.api_key else {}
    open_dropins = cfg.open_retriever_routes or not cfg.api_key
    dropins = dropin_router(server.retriever, default_k=cfg.search_top_k, search_timeout=cfg.search_timeout)
    app.include_router(dropins, dependencies=[] if open_dropins else [Depends(authorize)], responses=keyed)
    v1_search = v1_search_router(server.retriever, search_timeout=cfg.search_timeout)
    app.include_router(v1_search, dependencies=[Depends(authorize)], responses=keyed)

    def generation(model: type[BaseModel]) -> dict[int | str, dict[str, Any]]:
        """OpenAPI responses of a generation route: its reply (or stream) and every error it can give."""
        sse = {"text/event-stream": {"schema": {"type": "string"}}}
        reply = {"model": model, "content": sse, "description": 'The reply; with "stream": true, server-sent events'}
        return {200: reply, **keyed, **errors(404, 429, 503, 504)}

    @app.get("/", include_in_schema=False)
    @app.get("/playground", include_in_schema=False)
    async def playground() -> HTMLResponse:
        return HTMLResponse(PLAYGROUND.read_text(encoding="utf-8"))

    unhealthy = {"model": Health, "description": "Not ready: what failed (engine, retriever) and why"}

    @app.get("/health", response_model=Health, responses={503: unhealthy})
    async def health() -> JSONResponse:
        """200 when the engine and a probe search answer; 503 naming what does not (and why)."""
        problems = await server.check_health()
        status = "unhealthy" if problems else "ok"
        body = Health(status=status, model=cfg.model_name, running=server.running, **problems)
        return JSONResponse(body.model_dump(exclude_none=True), status_code=503 if problems else 200)

    @app.get("/metrics", response_class=PlainTextResponse)
    async def metrics() -> Response:
        return Response(generate_latest(server.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    card = ModelCard(id=cfg.model_name, template=cfg.template)

    @app.get("/v1/models", dependencies=[Depends(authorize)], responses=keyed)
    async def models() -> ModelList:
        return ModelList(data=[card])

    @app.get("/v1/models/{model:path}", dependencies=[Depends(authorize)], responses={**keyed, **errors(404)})
    async def model(model: str) -> ModelCard:
        server.check_model(model)
        return card

    async def chat_ids(request: Request, messages: Any) -> list[int]:
        """The chat prompt's token ids, rendered and tokenised off the event loop (:meth:`Server.tokenise`)."""
        return await server.tokenise(size(request), chat_prompt, messages, cfg.template, server.engine.tokenizer)

    @app.post("/v1/chat/completions", dependencies=[Depends(authorize)], responses=generation(ChatCompletion))
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
        server.check_model(body.model)
        prompt_ids = await chat_ids(request, body.messages)
        job = server.job(body, prompt_ids, "chatcmpl", prompt_param="messages")
        if body.stream:
            return stream(job, lambda events: (sse(c) async for c in chat_chunks(job, events, cfg.model_name)))
        return await reply(request, job, lambda: _chat(job))

    async def _chat(job: Job) -> BaseModel:
        return chat_completion(job, await server.reply(job))

    @app.post("/v1/completions", dependencies=[Depends(authorize)], responses=generation(Completion))
    async def completions(body: CompletionRequest, request: Request) -> Response:
        server.check_model(body.model)
        tokenizer = server.engine.tokenizer
        if isinstance(body.prompt, str):
            encode = partial(tokenizer.encode, add_special_tokens=False)
            prompt_ids = await server.tokenise(size(request), encode, body.prompt)
        elif bad := [t for t in body.prompt if not 0 <= t < len(tokenizer)]:
            raise APIError(
                400, f"prompt holds token ids outside the vocabulary (0 to {len(tokenizer) - 1}): {bad[:5]}",
                param="prompt", code="invalid_value",
            )  # fmt: skip
        else:
            prompt_ids = list(body.prompt)
        job = server.job(body, prompt_ids, "cmpl", prompt_param="prompt")
        if body.stream:
            return stream(job, lambda events: (sse(c) async for c in completion_chunks(job, events, cfg.model_name)))
        return await reply(request, job, lambda: _completion(job))

    async def _completion(job: Job) -> BaseModel:
        return completion(job, await server.reply(job))

    @app.post("/v1/responses", dependencies=[Depends(authorize)], responses=generation(ResponseObject))
    async def responses(body: ResponsesRequest, request: Request) -> Response:
        server.check_model(body.model)
        prompt_ids = await chat_ids(request, body.messages())
        job = server.job(body, prompt_ids, "resp", prompt_param="input")
        if body.stream:
            return stream(
                job, lambda events: (sse(e, e["type"]) async for e in response_events(job, events, cfg.model_name)),
                done=False,
            )  # fmt: skip
        return await reply(request, job, lambda: response_object(job, server.run(job), cfg.model_name))

    async def reply(request: Request, job: Job, make: Callable[[], Awaitable[BaseModel]]) -> Response:
        try:
            body = await cancel_on_disconnect(request, make())
        except ClientDisconnected:
            return Response(status_code=499, headers={"x-request-id": job.request_id})  # nginx's "client closed"
        except Exception as exc:
            raise failure(job, exc) from exc
        finally:
            server.metrics.request_seconds.observe(time.perf_counter() - job.started)
        return JSONResponse(body.model_dump(mode="json"), headers={"x-request-id": job.request_id})

    def stream(
        job: Job, render: Callable[[AsyncIterator[Event]], AsyncIterator[bytes]], *, done: bool = True
    ) -> TimedStream:
        """Stream ``job``'s events as rendered; a failure after the headers is an error event (as vLLM does)."""

        async def body() -> AsyncIterator[bytes]:
            try:
                async with aclosing(server.run(job)) as events:  # closing it aborts generation
                    async for chunk in render(events):
                        yield chunk
            except Exception as exc:
                error = failure(job, exc)
                payload = error_body(error.status, error.message, code=error.code)
                yield sse({"type": "error", **payload}, "error") if not done else sse(payload)
            finally:
                server.metrics.request_seconds.observe(time.perf_counter() - job.started)
            if done:
                yield sse("[DONE]")

        headers = {"x-request-id": job.request_id}
        return TimedStream(body(), write_timeout=cfg.stream_write_timeout, headers=headers)

    return app


def size(request: Request) -> int | None:
    """The request body's declared size in bytes (None when sent chunked)."""
    declared = request.headers.get("content-length", "")
    return int(declared) if declared.isdigit() else None


def failure(job: Job, exc: Exception) -> APIError:
    """The error a client gets when its search loop fails: 504 for a search past its timeout, else 503.

    The cause (paths, library internals) is logged with the request id, never sent.
    """
    headers = {"x-request-id": job.request_id}
    if isinstance(exc, SearchTimeout):
        log.warning("search timed out", extra={"request_id": job.request_id})
        return APIError(504, f"{exc} (request {job.request_id})", code="search_timeout", headers=headers)
    log.error("the search loop failed", exc_info=exc, extra={"request_id": job.request_id})
    message = f"the search loop failed (request {job.request_id}); the server log has the cause"
    return APIError(503, message, code="search_loop_failed", headers=headers)
