"""Text completions (``POST /v1/completions``): the same search loop on a prompt you render yourself.

``choices[i].text`` is choice ``i``'s whole response, tags visible; streamed, each search comes
as ``searches`` deltas (the query, then the results under the same index) and the answer and
citations on the choice's last chunk. ``logprobs`` lists the model's tokens only (the inserted
result blocks are text without tokens there; ``return_token_ids`` gives every token and the mask).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import aclosing
from functools import partial
from typing import Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field, field_validator

from research.http_errors import APIError, Text
from research.server.requests import MAX_TOP_LOGPROBS, CompletionFields, reject_if_set, unsupported
from research.server.routing import OpenAIServing, api_router, size, sse
from research.server.serving import Job, total_usage
from research.wire import (
    Citation,
    Content,
    Done,
    Event,
    FinishReason,
    Search,
    SearchDelta,
    SearchDone,
    SearchIssued,
    TokenIds,
    TokenLogprob,
    Usage,
)


class CompletionRequest(CompletionFields):
    """``POST /v1/completions``: the same loop on a prompt you render yourself."""

    prompt: Text | list[int] = Field(min_length=1)
    echo: bool | None = False
    logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS, description="over the model's tokens")
    suffix: str | None = None
    best_of: int | None = None

    _rejected_completion = reject_if_set(
        {name: f"{name} is not supported with a server-side search loop" for name in ("echo", "suffix")}
    )

    @field_validator("best_of")
    @classmethod
    def _best_of(cls, v: int | None) -> int | None:
        if (v or 1) > 1:
            raise unsupported("best_of > 1 is not supported: ask for n choices and pick one yourself")
        return v

    @property
    def token_budget(self) -> int | None:
        return self.max_tokens

    @property
    def budget_param(self) -> str:
        return "max_tokens"

    @property
    def prompt_param(self) -> str:
        return "prompt"

    @property
    def raw(self) -> bool:
        return True

    @property
    def listed_logprobs(self) -> int | None:
        return self.logprobs


class CompletionLogprobs(BaseModel):
    """OpenAI's log-probabilities of a text completion, over the model's tokens (inserted ones are not listed):
    ``text_offset`` is where each token's text starts in the choice's ``text``."""

    tokens: list[str] = []
    token_logprobs: list[float] = []
    top_logprobs: list[dict[str, float]] = []
    text_offset: list[int] = []

    def add(self, tokens: list[TokenLogprob], start: int, text: str) -> None:
        """The model's ``tokens`` that wrote ``text``, which starts at ``start`` in the choice's text."""
        offset = start
        for token in tokens:
            self.tokens.append(token.token)
            self.token_logprobs.append(token.logprob)
            self.top_logprobs.append({top.token: top.logprob for top in token.top_logprobs})
            self.text_offset.append(min(offset, start + len(text)))
            offset += len(token.token)


class Written:
    """How far each choice's text has come, to place its tokens' ``text_offset``."""

    def __init__(self) -> None:
        self.length: dict[int, int] = defaultdict(int)

    def logprobs(self, event: Content) -> CompletionLogprobs | None:
        """The log-probabilities of the tokens that wrote ``event``'s text (None when not asked for)."""
        found = None
        if event.logprobs is not None:
            found = CompletionLogprobs()
            found.add(event.logprobs.content or [], self.length[event.choice], event.text)
        self.length[event.choice] += len(event.text)
        return found


class CompletionChoice(TokenIds):
    index: int = 0
    text: str
    logprobs: CompletionLogprobs | None = None
    finish_reason: FinishReason | None
    stop_reason: str | int | None = None
    # -- extensions --
    searches: list[Search] | list[SearchDelta] | None = None
    answer: str | None = None
    citations: list[Citation] | None = None


class Completion(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None
    prompt_token_ids: list[int] | None = None
    """The prompt's token ids (``return_token_ids``; on the first chunk of a stream)."""


async def completion(job: Job, events: AsyncIterator[Event]) -> Completion:
    """The whole reply: each choice's text, its tokens' log-probabilities placed in it, its searches and answer."""
    written, logprobs, replies = Written(), {}, []
    async for event in events:
        if isinstance(event, Content) and (found := written.logprobs(event)) is not None:
            whole = logprobs.setdefault(event.choice, CompletionLogprobs())
            for name in CompletionLogprobs.model_fields:
                getattr(whole, name).extend(getattr(found, name))
        elif isinstance(event, Done):
            replies.append(event.reply)
    choices = []
    for out in sorted(replies, key=lambda reply: reply.index):
        listed = logprobs.get(out.index, CompletionLogprobs()) if job.sampling.logprobs else None
        choices.append(CompletionChoice(
            index=out.index, text=out.content, logprobs=listed, finish_reason=out.finish_reason,
            stop_reason=out.stop_reason, searches=out.searches, answer=out.answer, citations=out.citations,
            **TokenIds.of(out),
        ))  # fmt: skip
    return Completion(
        id=job.request_id, created=job.created, model=job.body.model, choices=choices, usage=total_usage(replies),
        prompt_token_ids=job.prompt_ids if job.body.wants_token_ids else None,
    )  # fmt: skip


async def completion_chunks(job: Job, events: AsyncIterator[Event]) -> AsyncIterator[Completion]:
    """The stream of ``text_completion`` chunks: text, ``searches`` deltas, the answer last, each marked with its
    choice; usage after every choice when asked for."""
    ids = {"prompt_token_ids": job.prompt_ids} if job.body.wants_token_ids else {}

    def chunk(choices: list[CompletionChoice], **extra) -> Completion:
        nonlocal ids
        extra, ids = {**ids, **extra}, {}  # the prompt's ids on the first chunk
        return Completion(id=job.request_id, created=job.created, model=job.body.model, choices=choices, **extra)

    written, replies = Written(), []
    async for event in events:
        if isinstance(event, Content):
            logprobs = written.logprobs(event)
            yield chunk([CompletionChoice(index=event.choice, text=event.text, logprobs=logprobs, finish_reason=None)])
        elif isinstance(event, SearchIssued | SearchDone):
            searches = [SearchDelta.of(event)]
            yield chunk([CompletionChoice(index=event.choice, text="", finish_reason=None, searches=searches)])
        elif isinstance(event, Done):
            end = event.reply
            replies.append(end)
            final = CompletionChoice(
                index=end.index, text="", finish_reason=end.finish_reason, stop_reason=end.stop_reason,
                answer=end.answer, citations=end.citations, **TokenIds.of(end),
            )  # fmt: skip
            yield chunk([final])
    if job.body.include_usage and replies:
        yield chunk([], usage=total_usage(replies))


class CompletionServing(OpenAIServing):
    """``POST /v1/completions``: the prompt as sent (text or token ids), the loop, chunks or a whole reply."""

    prefix = "cmpl-"

    async def prompt(self, body: CompletionRequest, request: Request) -> list[int]:
        tokenizer = self.server.engine.tokenizer
        if isinstance(body.prompt, str):
            encode = partial(tokenizer.encode, add_special_tokens=False)
            return await self.server.tokenise(size(request), encode, body.prompt)
        if bad := [t for t in body.prompt if not 0 <= t < len(tokenizer)]:
            raise APIError(
                400, f"prompt holds token ids outside the vocabulary (0 to {len(tokenizer) - 1}): {bad[:5]}",
                param="prompt", code="invalid_value",
            )  # fmt: skip
        return list(body.prompt)

    def chunks(self, job: Job, events: AsyncIterator[Event]) -> AsyncIterator[bytes]:
        return (sse(c) async for c in completion_chunks(job, events))

    async def whole(self, job: Job) -> Completion:
        async with aclosing(self.server.run(job)) as events:
            return await completion(job, events)


def router(serving: CompletionServing) -> APIRouter:
    """``POST /v1/completions``."""
    return api_router(serving, "/v1/completions", CompletionRequest, Completion, name="completions", tag="completions")
