"""The serving layer: one request = one run of the shared search loop, as typed output.

:meth:`Server.run` is the one place where the loop's events (:mod:`research.protocol.loop`)
become API output, the stream events of :mod:`research.wire`: text split into
:class:`Reasoning` and :class:`Content`, each search issued and done, and a final
:class:`Done` with the whole :class:`Reply`. The three APIs render those same events:
:mod:`research.server.chat` (chat and text completions) and
:mod:`research.server.responses` (the Responses API), streaming or not; a non-streaming
reply is the :class:`Reply`, never re-assembled from streamed deltas.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from array import array
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import aclosing
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

from pydantic import ValidationError

from research.http_errors import APIError
from research.protocol import (
    Engine,
    Finished,
    LoopLimits,
    ModelText,
    ProtocolName,
    ResultBlock,
    SamplingOptions,
    TemplateName,
    Trajectory,
    choice_sampling,
    get_protocol,
    stream_search_loop,
)
from research.protocol.recall import SEARCH_SCHEMA, SEARCH_TOOL
from research.retrieval import BatchingRetriever, WebSearch, search_error
from research.server.access import Access
from research.server.background import Background
from research.server.choice_text import LOWEST_LOGPROB, ChoiceText
from research.server.continuations import Continuation, Continuations
from research.server.metrics import Metrics
from research.server.records import ResponseRecords
from research.server.render import chat_prompt
from research.server.requests import EFFORT_SEARCHES, CompletionFields, FunctionTool, Message, SamplingFields
from research.server.store import DAY, Store
from research.wire import (
    Done,
    Event,
    Reply,
    SearchDone,
    SearchIssued,
    ToolCall,
    Usage,
    citations,
)

log = logging.getLogger("research.server")


@dataclass
class ServerConfig:
    """What ``research-serve`` was started with (see its ``--help``)."""

    model_name: str
    template: TemplateName
    protocol: ProtocolName = "research"
    """The search protocol the model was trained with (its prompts, tags and replies)."""
    max_tokens: int = 8192
    """Largest response budget a request may ask for (model and retrieved tokens)."""
    max_searches: int | None = None
    """Largest number of searches per response a request may ask for (default: unbounded)."""
    max_n: int = 16
    """Most choices (``n``) one request may ask for; each runs its own search loop."""
    search_top_k: int | None = None
    """Passages per search when a request does not say (default: the protocol's: ReSearch 5, Search-R1 3)."""
    search_timeout: float = 10.0
    """Seconds the index may work on a search (from when it reaches a reader; waiting in line is not counted)
    before its request fails (504), so a stalled index cannot hang requests."""
    max_search_queue: int = 1024
    """Searches waiting for a free index reader beyond which new generation requests get a 429 with
    ``Retry-After`` (admitted requests' searches wait their turn)."""
    max_concurrent_requests: int = 256
    """Generation requests served at once; more get a 429 with ``Retry-After``."""
    stream_write_timeout: float = 30.0
    """Seconds a stream waits on a client that has stopped reading before it closes the stream (and frees its slot)."""
    max_request_bytes: int = 4 * 2**20
    """Largest request body; a larger one is a 413 before it is read whole."""
    api_key: str | None = None
    """Require ``Authorization: Bearer KEY`` (also $RESEARCH_API_KEY)."""
    allowed_origins: tuple[str, ...] = ()
    """Comma-separated browser origins allowed to call the API (CORS), e.g. http://localhost:3000 or '*'."""
    open_retriever_routes: bool = False
    """With an API key, leave /search, /batch_search and /retrieve open (ReSearch's and Search-R1's retriever
    clients send no key); /v1/* still needs it."""
    api_keys_file: str | None = None
    """A file of API keys, 'KEY NAME' a line (the name optional): each key's stored responses and conversations
    are its own; another key gets 404"""
    store: str | None = None
    """Where responses and conversations are kept: sqlite:///PATH or postgresql://USER@HOST/DB, which several
    servers share (research-serve's default: a SQLite file in $RESEARCH_STATE_DIR, else ~/.local/state/research;
    a server made in Python without one: in memory)"""
    store_ttl: float = 30 * DAY
    """Seconds a stored response or conversation is kept (OpenAI's 30 days by default)"""
    store_lease: float = 30.0
    """Seconds after which a background response whose server stopped renewing its lease (it died) is marked
    failed by another"""
    max_background: int = 64
    """Background responses one server runs at once; more get a 429 with Retry-After"""


@dataclass
class Job:
    """One request's search loop, ready to run."""

    request_id: str
    prompt_ids: list[int]
    limits: LoopLimits
    sampling: SamplingOptions
    body: SamplingFields
    """The request (a chat, completion or Responses request)."""
    started: float = field(default_factory=time.perf_counter)
    created: int = field(default_factory=lambda: int(time.time()))

    @property
    def n(self) -> int:
        """Choices, each its own search loop (the request's ``n``)."""
        return self.body.choices


def usage(prompt_tokens: int, traj: Trajectory) -> Usage:
    """OpenAI usage plus ``retrieved_tokens`` and ``searches`` (result tokens are not completion tokens)."""
    retrieved = traj.mask.count(0)
    completion = len(traj.mask) - retrieved
    return Usage(
        prompt_tokens=prompt_tokens,
        completion_tokens=completion,
        total_tokens=prompt_tokens + completion,
        retrieved_tokens=retrieved,
        searches=len(traj.searches),
    )


def total_usage(replies: Sequence[Reply]) -> Usage:
    """The usage of a request's choices together: the prompt once, every choice's tokens and searches."""
    first = replies[0].usage
    assert first is not None
    completion = sum(r.usage.completion_tokens for r in replies if r.usage)
    return Usage(
        prompt_tokens=first.prompt_tokens,
        completion_tokens=completion,
        total_tokens=first.prompt_tokens + completion,
        retrieved_tokens=sum(r.usage.retrieved_tokens for r in replies if r.usage),
        searches=sum(r.usage.searches for r in replies if r.usage),
    )


async def interleave(streams: Sequence[AsyncIterator[Event]]) -> AsyncIterator[Event]:
    """The events of ``streams`` as they come; a failure in one stops all; closing this cancels them all."""
    queue: asyncio.Queue[Event | BaseException | None] = asyncio.Queue(maxsize=64)

    async def pump(stream: AsyncIterator[Event]) -> None:
        try:
            async with aclosing(stream):
                async for event in stream:
                    await queue.put(event)
            await queue.put(None)
        except Exception as exc:  # handed to the reader, which stops them all
            await queue.put(exc)

    tasks = [asyncio.ensure_future(pump(stream)) for stream in streams]
    try:
        running = len(tasks)
        while running:
            item = await queue.get()
            if item is None:
                running -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield item
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


LARGE_BODY = 256 * 1024
"""Request bytes above which a prompt is rendered and tokenised on the one thread kept for large prompts."""


class Server:
    """The engine, the retriever and the bookkeeping shared by all requests."""

    def __init__(self, engine: Engine, retriever: BatchingRetriever, config: ServerConfig) -> None:
        self.engine, self.retriever, self.config = engine, retriever, config
        self.protocol = get_protocol(config.protocol)
        self.search_top_k = config.search_top_k or self.protocol.default_k
        """Passages per search when a request does not say."""
        self.continuations = Continuations()
        self.metrics = Metrics()
        self.running = 0
        self._large_prompts = ThreadPoolExecutor(1, thread_name_prefix="large-prompts")
        self.access = Access.of(config.api_key, config.api_keys_file)
        self.store = Store(config.store, ttl=config.store_ttl)
        self.background = Background(self.store, lease=config.store_lease, limit=config.max_background)
        self.records = ResponseRecords(self.store, self.background, write_timeout=config.stream_write_timeout)

    @property
    def searches_web(self) -> bool:
        """Its searches go to a web search provider (``--web-search``): the Responses API shows web search calls."""
        return isinstance(self.retriever.index, WebSearch)

    async def start(self) -> None:
        """Make the store's schema (a store it cannot use fails the start) and keep this server's leases."""
        await self.store.ready()
        self.background.start_upkeep()

    async def stop(self) -> None:
        """Stop this server's background responses (stored as failed) and leases; close the store."""
        await self.background.close()
        await self.store.close()

    async def close(self) -> None:
        await self.stop()
        self._large_prompts.shutdown(wait=False, cancel_futures=True)
        await self.retriever.close()
        await self.engine.close()

    async def tokenise(self, body_bytes: int | None, render: Callable[..., list[int]], *args: Any) -> list[int]:
        """``render(*args)`` (a prompt's rendering and tokenising) off the event loop.

        Prompts from bodies over :data:`LARGE_BODY` (or of unknown size) take turns on one
        thread: several at once would each hold the GIL in turn and starve the event loop
        (four 3 MB prompts on four threads stalled every stream for about a second).
        """
        if body_bytes is not None and body_bytes <= LARGE_BODY:
            return await asyncio.to_thread(render, *args)
        return await asyncio.get_running_loop().run_in_executor(self._large_prompts, partial(render, *args))

    def function_tools(self, tools: Sequence[dict[str, Any]] | None) -> list[FunctionTool]:
        """A request's ``tools``, checked: only a protocol with tool calls (ReCall) takes the client's functions."""
        if tools and not self.protocol.takes_tools:
            raise APIError(
                400, f"tools are not supported by the {self.protocol.name} protocol: the server runs its search tool "
                "itself", param="tools", code="unsupported_parameter",
            )  # fmt: skip
        checked = []
        for i, tool in enumerate(tools or []):
            try:
                checked.append(FunctionTool.model_validate(tool))
            except ValidationError as e:
                where = ".".join(map(str, e.errors()[0]["loc"]))
                raise APIError(
                    400, f"tools.{i}.{where}: {e.errors()[0]['msg']}", param=f"tools.{i}", code="invalid_value"
                ) from None
            if checked[-1].function.name == SEARCH_TOOL:
                raise APIError(
                    400, f"{SEARCH_TOOL} is the name of the server's own search tool; give yours another",
                    param=f"tools.{i}.function.name", code="invalid_value",
                )  # fmt: skip
        return checked

    async def chat_ids(
        self, messages: Sequence[Message], body_bytes: int | None, tools: Sequence[FunctionTool] = ()
    ) -> list[int]:
        """The chat prompt's token ids in the model's template, rendered and tokenised off the event loop.

        ``tools`` are the client's functions the prompt lists beside the server's search (ReCall only).
        """
        schemas = [SEARCH_SCHEMA, *(tool.schema() for tool in tools)] if tools else None
        return await self.tokenise(
            body_bytes, chat_prompt, messages, self.config.template, self.engine.tokenizer, self.protocol, schemas,
            self.continuations,
        )  # fmt: skip

    async def check_health(self) -> dict[str, str]:
        """What cannot serve, and why: ``{"engine": cause, "retriever": cause}``; empty when all can.

        The retriever is probed with one search, under the search timeout.
        """
        problems = {}
        try:
            await asyncio.wait_for(self.engine.check_health(), self.config.search_timeout)
        except Exception as exc:
            log.warning("health: the engine failed its check", exc_info=exc)
            problems["engine"] = f"the engine failed its health check ({type(exc).__name__})"
        try:
            await self.retriever.using(timeout=self.config.search_timeout).search(["health"], k=1)
        except Exception as exc:
            problems["retriever"] = search_error(exc, None, self.retriever).message
        return problems

    # -- admission (research.server.middleware.Admission) ------------------
    def admit(self) -> None:
        """Take a slot, or refuse with a 429 (``Retry-After: 1``) naming the limit that is reached."""
        full = None
        if self.running >= self.config.max_concurrent_requests:
            full = f"the server is at its limit of {self.config.max_concurrent_requests} concurrent requests"
        elif self.retriever.waiting >= self.config.max_search_queue:
            full = (
                f"{self.retriever.waiting} searches are waiting for the index "
                f"(the limit is {self.config.max_search_queue})"
            )
        if full:
            raise APIError(429, f"{full}; retry", code="too_many_requests", headers={"Retry-After": "1"})
        self.running += 1
        self.metrics.running.inc()

    def release(self) -> None:
        self.running -= 1
        self.metrics.running.dec()

    # -- request -> job ----------------------------------------------------
    def check_model(self, model: str) -> None:
        if model != self.config.model_name:
            raise APIError(
                404, f"the model {model!r} does not exist; this server serves {self.config.model_name!r}",
                param="model", code="model_not_found",
            )  # fmt: skip

    def job(self, body: SamplingFields, prompt_ids: list[int], prefix: str) -> Job:
        """Check ``body`` against the server's limits and the model's context; the loop's settings.

        The routes have checked the model name already (:meth:`check_model`), before rendering the prompt.
        """
        cfg = self.config
        budget, budget_param = body.token_budget, body.budget_param
        if budget is not None and budget > cfg.max_tokens:
            raise APIError(
                400, f"{budget_param} is {budget}, above this server's limit of {cfg.max_tokens}", param=budget_param,
                code="invalid_value",
            )  # fmt: skip
        room = (self.engine.max_model_len or 1 << 30) - len(prompt_ids)
        if room < 1:
            raise APIError(
                400,
                f"the prompt has {len(prompt_ids)} tokens; the model's context is {self.engine.max_model_len}",
                param=body.prompt_param,
                code="context_length_exceeded",
            )
        if body.max_searches is not None and cfg.max_searches is not None and body.max_searches > cfg.max_searches:
            raise APIError(
                400, f"max_searches is {body.max_searches}, above this server's limit of {cfg.max_searches}",
                param="max_searches", code="invalid_value",
            )  # fmt: skip
        searches = body.max_searches
        if searches is None and body.effort is not None:  # reasoning effort: a search budget
            searches = EFFORT_SEARCHES[body.effort]
        if searches is None or (cfg.max_searches is not None and searches > cfg.max_searches):
            searches = cfg.max_searches  # the server's limit caps an effort's budget
        limits = LoopLimits(
            max_tokens=min(budget or cfg.max_tokens, room),
            max_searches=searches,
            k=body.search_top_k or self.search_top_k,
        )
        sampling = SamplingOptions(
            temperature=1.0 if body.temperature is None else body.temperature,
            top_p=1.0 if body.top_p is None else body.top_p,
            top_k=top_k if 0 < (top_k := body.top_k or 0) < len(self.engine.tokenizer) else 0,  # >= vocab: off
            min_p=body.min_p or 0.0,
            repetition_penalty=body.repetition_penalty or 1.0,
            seed=body.seed,
        )
        if body.choices > cfg.max_n:
            raise APIError(
                400, f"n is {body.choices}, above this server's limit of {cfg.max_n}", param="n", code="invalid_value"
            )
        if body.listed_logprobs is not None:
            sampling = replace(sampling, logprobs=True, top_logprobs=body.listed_logprobs)
        if isinstance(body, CompletionFields):  # chat and completions: OpenAI's penalties and bias
            bias = body.token_bias
            self._check_vocabulary(bias or (), "logit_bias")
            self._check_vocabulary(body.stop_ids, "stop_token_ids")
            sampling = replace(
                sampling, presence_penalty=body.presence_penalty or 0.0,
                frequency_penalty=body.frequency_penalty or 0.0, logit_bias=bias,
            )  # fmt: skip
        return Job(f"{prefix}{uuid.uuid4().hex}", prompt_ids, limits, sampling, body)

    def _check_vocabulary(self, tokens: Iterable[int], param: str) -> None:
        """A 400 naming ``param`` when it names a token outside the model's vocabulary."""
        size = len(self.engine.tokenizer)
        if unknown := [t for t in tokens if not 0 <= t < size]:
            raise APIError(
                400, f"{param} names token {unknown[0]}, outside the model's vocabulary of {size}", param=param,
                code="invalid_value",
            )  # fmt: skip

    # -- the loop as typed output ---------------------------------------------
    async def run(self, job: Job) -> AsyncIterator[Event]:
        """The loop's events as API output: text, searches, then :class:`Done` with the :class:`Reply`, for each of
        the request's ``n`` choices (their loops run at once, their events interleaved, each marked with its
        choice; closing this iterator cancels them all)."""
        self.metrics.prompt_tokens.inc(len(job.prompt_ids))
        runs = [self._choice(job, i) for i in range(job.n)]
        async with aclosing(runs[0] if job.n == 1 else interleave(runs)) as events:
            async for event in events:
                yield event

    async def _choice(self, job: Job, choice: int) -> AsyncIterator[Event]:
        """Choice ``choice``'s loop as API output."""
        body = job.body
        text = ChoiceText(
            self.protocol, self.engine.tokenizer, choice=choice, raw=body.raw, stop=body.stop_strings,
            include_stop=body.include_stop, top_logprobs=body.listed_logprobs,
        )  # fmt: skip
        retrieval_time = 0.0
        events = stream_search_loop(
            self.engine,
            self.retriever.using(body.search_mode or "vector", timeout=self.config.search_timeout),
            job.prompt_ids,
            limits=job.limits,
            sampling=choice_sampling(job.sampling, choice),
            request_id=job.request_id if job.n == 1 else f"{job.request_id}-{choice}",
            protocol=self.protocol,
            client_tools=set(body.client_tools),
            stop=body.stop_strings,
            stop_token_ids=body.stop_ids,
        )
        async with aclosing(events):
            async for event in events:
                if isinstance(event, ModelText):
                    self.metrics.generation_tokens.inc(len(event.token_ids))
                    for out in text.model(event):
                        yield out
                elif isinstance(event, SearchIssued | SearchDone):
                    yield replace(event, choice=choice)
                elif isinstance(event, ResultBlock):
                    retrieval_time += event.seconds
                    if event.searches:
                        self.metrics.searched(event.seconds, event.index_seconds, len(event.token_ids), event.searches)
                    self.metrics.notices.inc(event.notices)
                    for out in text.inserted(event.text):
                        yield out
                elif isinstance(event, Finished):
                    for out in text.close(event.trajectory):
                        yield out
                    self.metrics.generation_seconds.observe(time.perf_counter() - job.started - retrieval_time)
                    yield Done(self._reply(job, event.trajectory, text, choice))

    def _reply(self, job: Job, traj: Trajectory, text: ChoiceText, choice: int) -> Reply:
        """The whole reply of ``job``'s finished loop for choice ``choice``."""
        log.info(
            "done: %d searches, finish %s", len(traj.searches), traj.finish_reason, extra={"request_id": job.request_id}
        )
        finish = traj.finish_reason if traj.finish_reason in ("length", "tool_calls") else "stop"
        ids = {}
        if job.body.wants_token_ids:
            ids = {"token_ids": traj.completion_ids, "inserted_mask": [1 - m for m in traj.mask]}
            if text.logprobs is not None:
                logprobs = traj.logprobs or [None] * len(traj.mask)
                ids["token_logprobs"] = [None if lp is None else max(lp, LOWEST_LOGPROB) for lp in logprobs]
        return Reply(
            model=self.config.model_name,
            index=choice,
            answer=traj.answer if finish != "tool_calls" else None,
            content="".join(text.content),
            reasoning="".join(text.reasoning),
            searches=traj.searches,
            citations=citations(traj.searches),
            usage=usage(len(job.prompt_ids), traj),
            tool_calls=self._tool_calls(job, traj),
            finish_reason=finish,
            stop_reason="search_limit" if traj.finish_reason == "search_limit" else traj.stop_reason,
            logprobs=text.logprobs,
            **ids,
        )

    def _tool_calls(self, job: Job, traj: Trajectory) -> list[ToolCall]:
        """The client's functions the model called, each with a new id; the turn is remembered under them."""
        if traj.pending is None:
            return []
        ids = {f"call_{uuid.uuid4().hex[:24]}": i for i in traj.pending.asked}
        turn = array("I", job.prompt_ids + traj.completion_ids)
        self.continuations.remember(Continuation(turn, hash(tuple(job.prompt_ids)), traj.pending, ids))
        calls = traj.pending.step.calls
        return [
            ToolCall(id=call_id, name=calls[i].name or "", arguments=json.dumps(calls[i].arguments))
            for call_id, i in ids.items()
        ]
