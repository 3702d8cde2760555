"""Text completions (``POST /v1/completions``): the same search loop on a prompt you render yourself.

``choices[0].text`` is the whole response, tags visible; streamed, each search comes as
``searches`` deltas (the query, then the results under the same index) and the answer
and citations on the last chunk.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from functools import partial
from typing import Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field, field_validator

from research.http_errors import APIError, Text
from research.server.requests import CompletionFields, reject_if_set, unsupported
from research.server.routing import OpenAIServing, api_router, size, sse
from research.server.serving import Job
from research.wire import (
    Citation,
    Content,
    Done,
    Event,
    FinishReason,
    Reply,
    Search,
    SearchDelta,
    SearchDone,
    SearchIssued,
    Usage,
)


class CompletionRequest(CompletionFields):
    """``POST /v1/completions``: the same loop on a prompt you render yourself."""

    prompt: Text | list[int] = Field(min_length=1)
    echo: bool | None = False
    logprobs: int | None = None
    suffix: str | None = None
    best_of: int | None = None

    _rejected_completion = reject_if_set(
        {name: f"{name} is not supported with a server-side search loop" for name in ("echo", "logprobs", "suffix")}
    )

    @field_validator("best_of")
    @classmethod
    def _best_of(cls, v: int | None) -> int | None:
        if (v or 1) > 1:
            raise unsupported("best_of > 1 is not supported: each candidate would run its own search loop")
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


class CompletionChoice(BaseModel):
    index: int = 0
    text: str
    logprobs: None = None
    finish_reason: FinishReason | None
    stop_reason: str | None = None
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


async def completion_chunks(job: Job, events: AsyncIterator[Event]) -> AsyncIterator[Completion]:
    """The stream of ``text_completion`` chunks: text, ``searches`` deltas, the answer last."""

    def chunk(choices: list[CompletionChoice], **extra) -> Completion:
        return Completion(id=job.request_id, created=job.created, model=job.body.model, choices=choices, **extra)

    async for event in events:
        if isinstance(event, Content):
            yield chunk([CompletionChoice(text=event.text, finish_reason=None)])
        elif isinstance(event, SearchIssued | SearchDone):
            yield chunk([CompletionChoice(text="", finish_reason=None, searches=[SearchDelta.of(event)])])
        elif isinstance(event, Done):
            end = event.reply
            final = CompletionChoice(
                text="", finish_reason=end.finish_reason, stop_reason=end.stop_reason,
                answer=end.answer, citations=end.citations,
            )  # fmt: skip
            yield chunk([final])
            if job.body.include_usage:
                yield chunk([], usage=end.usage)


class CompletionServing(OpenAIServing):
    """``POST /v1/completions``: the prompt as sent (text or token ids), the loop, chunks or a whole reply."""

    prefix = "cmpl"

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
        return completion(job, await self.final(job))


def router(serving: CompletionServing) -> APIRouter:
    """``POST /v1/completions``."""
    return api_router(serving, "/v1/completions", CompletionRequest, Completion, name="completions", tag="completions")
