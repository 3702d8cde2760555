"""The OpenAI-compatible app: chat and text completions with the search loop on the server.

One request = one run of the shared search loop (:mod:`research.protocol.loop`)
on the shared engine and retriever: the engine batches concurrent requests, the
:class:`~research.retrieval.BatchingRetriever` batches their searches. The loop's
events become OpenAI deltas here; :meth:`Server.deltas` is the single place that does it,
for streaming and non-streaming responses alike.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from research.engines.base import Engine, SamplingOptions
from research.http_errors import APIError, error_body, install_error_handlers
from research.protocol import (
    Finished,
    LoopLimits,
    ModelText,
    SearchDone,
    SearchIssued,
    TemplateName,
    Trajectory,
    stream_search_loop,
)
from research.retrieval import BatchingRetriever
from research.retrieval.batching import INDEX_SECONDS
from research.retrieval.service import search_router
from research.server.metrics import Metrics
from research.server.render import ReasoningSplitter, chat_prompt, citations, search_json
from research.server.schemas import ChatCompletionRequest, CompletionRequest

log = logging.getLogger("research.server")

FINISH_REASONS = {"stop": "stop", "length": "length", "search_limit": "stop"}
"""The loop's finish reasons in OpenAI's vocabulary (``search_limit`` also sets ``stop_reason``)."""


@dataclass
class ServerConfig:
    """What ``research-serve`` was started with (see its ``--help``)."""

    model_name: str
    template: TemplateName
    max_tokens: int = 8192
    """Largest response budget a request may ask for (model and retrieved tokens)."""
    max_searches: int | None = None
    """Largest ``max_searches`` a request may ask for; None: unbounded."""
    search_top_k: int = 5
    max_concurrent_requests: int = 256
    api_key: str | None = None


@dataclass
class Job:
    """One request's search loop, ready to run."""

    request_id: str
    prompt_ids: list[int]
    limits: LoopLimits
    sampling: SamplingOptions
    body: ChatCompletionRequest | CompletionRequest
    raw: bool
    started: float = field(default_factory=time.perf_counter)


class Server:
    """The engine, the retriever and the bookkeeping shared by all requests."""

    def __init__(self, engine: Engine, retriever: BatchingRetriever, config: ServerConfig) -> None:
        self.engine, self.retriever, self.config = engine, retriever, config
        self.metrics = Metrics()
        self.running = 0

    async def close(self) -> None:
        await self.retriever.close()
        await self.engine.close()

    # -- admission ---------------------------------------------------------
    def admit(self) -> None:
        if self.running >= self.config.max_concurrent_requests:
            raise APIError(
                429,
                f"the server is at its limit of {self.config.max_concurrent_requests} concurrent requests; retry",
                code="too_many_requests",
                headers={"Retry-After": "1"},
            )
        self.running += 1
        self.metrics.running.inc()

    def release(self) -> None:
        self.running -= 1
        self.metrics.running.dec()

    # -- request -> job ----------------------------------------------------
    def job(self, body: ChatCompletionRequest | CompletionRequest, prompt_ids: list[int], prefix: str) -> Job:
        cfg = self.config
        if body.model != cfg.model_name:
            raise APIError(
                404, f"the model {body.model!r} does not exist; this server serves {cfg.model_name!r}",
                param="model", code="model_not_found",
            )  # fmt: skip
        budget = body.token_budget
        if budget is not None and budget > cfg.max_tokens:
            raise APIError(
                400, f"max_tokens is {budget}, above this server's limit of {cfg.max_tokens}", param="max_tokens"
            )
        room = (self.engine.max_model_len or 1 << 30) - len(prompt_ids)
        if room < 1:
            raise APIError(
                400,
                f"the prompt has {len(prompt_ids)} tokens; the model's context is {self.engine.max_model_len}",
                param="messages" if isinstance(body, ChatCompletionRequest) else "prompt",
            )
        if body.max_searches is not None and cfg.max_searches is not None and body.max_searches > cfg.max_searches:
            raise APIError(
                400, f"max_searches is {body.max_searches}, above this server's limit of {cfg.max_searches}",
                param="max_searches",
            )  # fmt: skip
        limits = LoopLimits(
            max_tokens=min(budget or cfg.max_tokens, room),
            max_searches=body.max_searches if body.max_searches is not None else cfg.max_searches,
            top_k=body.search_top_k or cfg.search_top_k,
        )
        sampling = SamplingOptions(
            temperature=body.temperature, top_p=body.top_p, top_k=max(body.top_k, 0), seed=body.seed
        )
        raw = not isinstance(body, ChatCompletionRequest) or body.reasoning_format == "raw"
        return Job(f"{prefix}-{uuid.uuid4().hex}", prompt_ids, limits, sampling, body, raw)

    # -- the loop as OpenAI deltas -------------------------------------------
    async def deltas(self, job: Job) -> AsyncIterator[dict[str, Any]]:
        """Chat deltas for one loop: text, search announcements, then the final delta.

        Text goes to ``reasoning``/``reasoning_content`` or ``content`` (see
        :class:`ReasoningSplitter`); a search is announced twice under
        ``search`` (the query, then its results); the last delta holds
        ``answer``, ``citations`` and, under ``_finish``, the trajectory.
        """
        splitter = ReasoningSplitter(raw=job.raw)
        m = self.metrics
        m.prompt_tokens.inc(len(job.prompt_ids))
        searching_since = retrieval_time = 0.0
        issued = 0
        events = stream_search_loop(
            self.engine,
            self.retriever.using(job.body.search_mode),
            job.prompt_ids,
            limits=job.limits,
            sampling=job.sampling,
            request_id=job.request_id,
        )
        async with aclosing(events):
            async for event in events:
                if isinstance(event, ModelText):
                    m.generation_tokens.inc(len(event.token_ids))
                    if delta := _text_delta(*splitter.feed(event.text)):
                        yield delta
                elif isinstance(event, SearchIssued):
                    searching_since = time.perf_counter()
                    INDEX_SECONDS.set(0.0)
                    yield {"search": {"index": issued, "query": event.query}}
                    issued += 1
                elif isinstance(event, SearchDone):
                    elapsed = time.perf_counter() - searching_since
                    retrieval_time += elapsed
                    m.retrieval_seconds.observe(elapsed)
                    m.search_overhead_seconds.observe(max(0.0, elapsed - INDEX_SECONDS.get()))
                    m.searches.inc()
                    m.retrieved_tokens.inc(len(event.token_ids))
                    yield {"search": search_json(issued - 1, event.search)}
                    if delta := _text_delta(*splitter.feed(event.text)):
                        yield delta
                elif isinstance(event, Finished):
                    if delta := _text_delta(*splitter.close()):
                        yield delta
                    traj = event.trajectory
                    m.generation_seconds.observe(time.perf_counter() - job.started - retrieval_time)
                    yield {"answer": traj.answer, "citations": citations(traj.searches), "_finish": traj}


def _text_delta(reasoning: str, content: str) -> dict[str, str]:
    delta: dict[str, str] = {}
    if reasoning:
        delta["reasoning"] = delta["reasoning_content"] = reasoning
    if content:
        delta["content"] = content
    return delta


def usage(job: Job, traj: Trajectory) -> dict[str, int]:
    """OpenAI usage plus ``retrieved_tokens`` and ``searches`` (result tokens are not completion tokens)."""
    retrieved = traj.mask.count(0)
    completion = len(traj.mask) - retrieved
    return {
        "prompt_tokens": len(job.prompt_ids),
        "completion_tokens": completion,
        "total_tokens": len(job.prompt_ids) + completion,
        "retrieved_tokens": retrieved,
        "searches": len(traj.searches),
    }


def finish(traj: Trajectory) -> dict[str, Any]:
    return {
        "finish_reason": FINISH_REASONS[traj.finish_reason or "stop"],
        "stop_reason": "search_limit" if traj.finish_reason == "search_limit" else None,
    }


def sse(data: dict[str, Any] | str) -> bytes:
    return f"data: {data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)}\n\n".encode()


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
            log.info("client disconnected; request cancelled")
    return task.result()


def create_app(server: Server) -> FastAPI:
    """The FastAPI app: OpenAI routes, the retriever's routes, health and metrics.

    Its lifespan closes ``server`` (engine and retriever) at shutdown: uvicorn re-raises
    SIGTERM/SIGINT once it stops, so code after ``serve()`` never runs, and a vLLM engine
    left open would outlive the process.
    """
    cfg = server.config

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await server.close()

    app = FastAPI(title="ReSearch server", lifespan=lifespan)
    app.state.retriever, app.state.default_k, app.state.server = server.retriever, cfg.search_top_k, server
    install_error_handlers(app)

    async def authorize(request: Request) -> None:
        if cfg.api_key and request.headers.get("authorization") != f"Bearer {cfg.api_key}":
            raise APIError(401, "missing or wrong API key: send 'Authorization: Bearer <key>'", code="invalid_api_key")

    @app.middleware("http")
    async def count_and_log(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        started = time.perf_counter()
        response = await call_next(request)
        endpoint = request.url.path
        if endpoint.startswith("/v1/") or endpoint in {"/search", "/batch_search", "/retrieve"}:
            server.metrics.requests.labels(endpoint, str(response.status_code)).inc()
        log.info(
            "%s %s -> %d in %.1f ms",
            request.method,
            endpoint,
            response.status_code,
            1000 * (time.perf_counter() - started),
            extra={"request_id": response.headers.get("x-request-id")},
        )
        return response

    app.include_router(search_router(), dependencies=[Depends(authorize)])

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": cfg.model_name, "running": server.running}

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(server.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models", dependencies=[Depends(authorize)])
    async def models() -> dict[str, Any]:
        card = {"id": cfg.model_name, "object": "model", "created": 0, "owned_by": "research", "template": cfg.template}
        return {"object": "list", "data": [card]}

    @app.post("/v1/chat/completions", dependencies=[Depends(authorize)])
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
        prompt_ids = chat_prompt(body.messages, cfg.template, server.engine.tokenizer)
        job = server.job(body, prompt_ids, "chatcmpl")
        return await respond(request, job, chat=True)

    @app.post("/v1/completions", dependencies=[Depends(authorize)])
    async def completions(body: CompletionRequest, request: Request) -> Response:
        if isinstance(body.prompt, str):
            prompt_ids = server.engine.tokenizer.encode(body.prompt, add_special_tokens=False)
        else:
            prompt_ids = list(body.prompt)
        job = server.job(body, prompt_ids, "cmpl")
        return await respond(request, job, chat=False)

    async def respond(request: Request, job: Job, *, chat: bool) -> Response:
        server.admit()
        headers = {"x-request-id": job.request_id}
        if job.body.stream:
            return StreamingResponse(stream(job, chat), media_type="text/event-stream", headers=headers)
        try:
            body = await cancel_on_disconnect(request, complete(job, chat))
        except Exception as exc:
            raise APIError(503, f"the search loop failed: {exc}", code="search_loop_failed") from exc
        finally:
            server.release()
            server.metrics.request_seconds.observe(time.perf_counter() - job.started)
        return JSONResponse(body, headers=headers)

    def envelope(job: Job, chat: bool, choices: list[dict[str, Any]]) -> dict[str, Any]:
        kind = ("chat.completion" if chat else "text_completion") + (".chunk" if chat and job.body.stream else "")
        return {
            "id": job.request_id,
            "object": kind,
            "created": int(time.time()),
            "model": cfg.model_name,
            "choices": choices,
        }

    async def complete(job: Job, chat: bool) -> dict[str, Any]:
        texts = {"reasoning": "", "content": ""}
        searches: list[dict[str, Any]] = []
        final: dict[str, Any] = {}
        async for delta in server.deltas(job):
            for key in texts:
                texts[key] += delta.get(key, "")
            if "search" in delta and "results" in delta["search"]:
                searches.append(delta["search"])
            if "_finish" in delta:
                final = delta
        traj: Trajectory = final.pop("_finish")
        extra = {"answer": final["answer"], "citations": final["citations"], "searches": searches}
        if chat:
            message = {"role": "assistant", "content": texts["content"], **extra}
            if not job.raw:
                message["reasoning"] = message["reasoning_content"] = texts["reasoning"]
            choice = {"index": 0, "message": message, "logprobs": None, **finish(traj)}
        else:
            choice = {"index": 0, "text": texts["content"], "logprobs": None, **extra, **finish(traj)}
        log.info(
            "done: %d searches, finish %s", len(traj.searches), traj.finish_reason, extra={"request_id": job.request_id}
        )
        return {**envelope(job, chat, [choice]), "usage": usage(job, traj)}

    async def stream(job: Job, chat: bool) -> AsyncIterator[bytes]:
        include_usage = job.body.stream_options is not None and job.body.stream_options.include_usage
        try:
            if chat:
                role = {"role": "assistant", "content": ""}
                yield sse(envelope(job, chat, [{"index": 0, "delta": role, "logprobs": None, "finish_reason": None}]))
            async for delta in server.deltas(job):
                traj = delta.pop("_finish", None)
                if chat:
                    choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}
                else:
                    text = {"text": delta.pop("content", "")}
                    choice = {"index": 0, **text, **delta, "logprobs": None, "finish_reason": None}
                if traj is not None:
                    choice.update(finish(traj))
                yield sse(envelope(job, chat, [choice]))
                if traj is not None and include_usage:
                    yield sse({**envelope(job, chat, []), "usage": usage(job, traj)})
        except Exception as exc:  # headers are sent: report in the stream, as vLLM does
            log.exception("stream failed", extra={"request_id": job.request_id})
            yield sse(error_body(503, f"the search loop failed: {exc}", code="search_loop_failed"))
        finally:
            server.release()
            server.metrics.request_seconds.observe(time.perf_counter() - job.started)
        yield sse("[DONE]")

    return app
