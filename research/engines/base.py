"""What the engines share beyond the contract (:mod:`research.protocol.engine`): the common opening of
``generate`` (:class:`BaseEngine`), the context-window cut, and folding a stream (stop strings are found by
:func:`~research.protocol.engine.find_stop`, which the loop shares)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

from research.protocol.engine import GREEDY, Chunk, FinishReason, SamplingOptions


@dataclass(slots=True)
class Generation:
    """Chunks of one request folded together (see :func:`collect`)."""

    token_ids: list[int] = field(default_factory=list)
    text: str = ""
    logprobs: list[float] | None = None
    top_logprobs: list[dict[int, float]] | None = None
    finish_reason: FinishReason | None = None
    stop_reason: str | None = None

    def add(self, chunk: Chunk) -> None:
        self.token_ids += chunk.token_ids
        self.text += chunk.text
        if chunk.logprobs is not None:
            self.logprobs = (self.logprobs or []) + chunk.logprobs
        if chunk.top_logprobs is not None:
            self.top_logprobs = (self.top_logprobs or []) + chunk.top_logprobs
        if chunk.finish_reason is not None:
            self.finish_reason, self.stop_reason = chunk.finish_reason, chunk.stop_reason


async def collect(chunks: AsyncIterator[Chunk]) -> Generation:
    """Drain a chunk stream into one :class:`Generation`."""
    out = Generation()
    async for chunk in chunks:
        out.add(chunk)
    return out


def fit_max_tokens(max_tokens: int, prompt_len: int, max_model_len: int | None) -> int:
    """``max_tokens`` cut to the room left in the context window (0: no room at all).

    >>> fit_max_tokens(8192, 1000, 4096), fit_max_tokens(10, 5000, 4096), fit_max_tokens(10, 5, None)
    (3096, 0, 10)
    """
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be at least 1, got {max_tokens}")
    if max_model_len is None:
        return max_tokens
    return max(0, min(max_tokens, max_model_len - prompt_len))


def context_full() -> Chunk:
    """The one chunk an engine yields for a prompt that already fills its context window."""
    return Chunk([], "", finish_reason="length")


class BaseEngine:
    """The opening every engine's ``generate`` shares: the budget cut to the context window (a prompt that fills it
    is one ``length`` chunk, :func:`context_full`) and a request id; the engine streams the rest in
    :meth:`_generate`, which is closed (aborting the request) when the caller leaves early."""

    tokenizer: Any
    max_model_len: int | None

    async def generate(
        self,
        prompt_ids: Sequence[int],
        *,
        max_tokens: int,
        stop: Sequence[str] = (),
        sampling: SamplingOptions = GREEDY,
        request_id: str | None = None,
    ) -> AsyncIterator[Chunk]:
        room = fit_max_tokens(max_tokens, len(prompt_ids), await self._context_window())
        if room == 0:
            yield context_full()
            return
        stream = self._generate(list(prompt_ids), room, tuple(stop), sampling, request_id or uuid.uuid4().hex)
        async with aclosing(stream):
            async for chunk in stream:
                yield chunk

    async def _context_window(self) -> int | None:
        """The context window as the engine knows it before generating (an upstream asks its server first)."""
        return self.max_model_len

    def _generate(
        self, prompt_ids: list[int], max_tokens: int, stop: tuple[str, ...], sampling: SamplingOptions, request_id: str
    ) -> AsyncIterator[Chunk]:
        """Generate at most ``max_tokens`` (which fit the context window) after ``prompt_ids``."""
        raise NotImplementedError
