"""The ReSearch search loop, shared by serving, training and evaluation.

One loop per sequence, an explicit state machine::

    GENERATING --stop at </search>--> SEARCHING --result appended--> GENERATING
        |                                  |
        +--EOS / budget / search limit-----+-----> DONE

It works on token ids only. The model's tokens are kept exactly as the engine
generated them (mask 1); the result block is tokenised on its own and appended
(mask 0), so nothing the model wrote is ever re-tokenised. The response budget
counts model and result tokens alike (8192 in the paper).

Choices where the paper is silent (documented in README):

* an empty query (``<search> </search>``) is answered without calling the
  retriever, with the reference pipeline's ``nothing to search``;
* when the search budget is spent, the next ``</search>`` ends the response
  with finish reason ``search_limit``; a result block that does not fit the
  token budget is cut and the response ends with ``length``.

Run it with :func:`run_search_loop` (a finished :class:`Trajectory`) or
:func:`stream_search_loop` (events as they happen, for streaming servers).
"""

from __future__ import annotations

import asyncio
import functools
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Literal, Protocol

from research.protocol.answer import check_format, extract_answer
from research.protocol.engine import GREEDY, Engine, SamplingOptions
from research.protocol.tags import EMPTY_QUERY_RESULT, SEARCH_STOP, extract_query, format_result
from research.wire import DEFAULT_K, Passage, Search, SearchDone, SearchIssued

LoopFinish = Literal["stop", "length", "search_limit"]


@dataclass(frozen=True, slots=True)
class Retrieved:
    """What a retriever answers: the passages for each query, and how long the index itself took."""

    passages: list[list[Passage]]
    index_seconds: float | None = None
    """Seconds of embedding and index work (None: not reported); the rest of a search's time was queueing."""


class Retriever(Protocol):
    """Anything that answers a batch of queries with top-``k`` passages each."""

    async def search(self, queries: Sequence[str], *, k: int) -> Retrieved: ...


@dataclass(frozen=True, slots=True)
class LoopLimits:
    """Budgets of one search loop."""

    max_tokens: int = 8192
    """Response tokens, model and retrieved together (the paper's 8192)."""
    max_searches: int | None = None
    """Searches allowed; None leaves only the token budget to bound them."""
    k: int = DEFAULT_K
    """Passages per search."""

    def __post_init__(self) -> None:
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be at least 1, got {self.max_tokens}")
        if self.max_searches is not None and self.max_searches < 0:
            raise ValueError(f"max_searches must be >= 0 or None, got {self.max_searches}")
        if self.k < 1:
            raise ValueError(f"k must be at least 1, got {self.k}")


@dataclass(slots=True)
class Trajectory:
    """A finished (or growing) response: ids, loss mask, logprobs, text and searches."""

    prompt_ids: list[int]
    completion_ids: list[int] = field(default_factory=list)
    mask: list[int] = field(default_factory=list)
    """1 for tokens the model generated, 0 for retrieved (result block) tokens."""
    logprobs: list[float | None] | None = None
    """Per completion token, when the engine reports them; None at retrieved tokens."""
    text: str = ""
    """The response text: model text and result blocks, EOS excluded."""
    eos_text: str = ""
    """The text of the end-of-sequence token that ended generation ("" when none did)."""
    searches: list[Search] = field(default_factory=list)
    finish_reason: LoopFinish | None = None

    @property
    def ended_with_eos(self) -> bool:
        return self.finish_reason == "stop"

    @property
    def response(self) -> str:
        """The text the reference reward reads: :attr:`text` and the EOS token's text."""
        return self.text + self.eos_text

    @property
    def answer(self) -> str | None:
        return extract_answer(self.text)

    @property
    def well_formed(self) -> bool:
        """The reference's format verdict (tags only; EOS is the reward's separate check)."""
        return bool(check_format(self.text))

    def _append(self, ids: Sequence[int], text: str, mark: int, logprobs: Sequence[float] | None) -> None:
        if self.logprobs is not None or logprobs is not None:
            if self.logprobs is None:
                self.logprobs = [None] * len(self.completion_ids)
            self.logprobs += list(logprobs) if logprobs is not None else [None] * len(ids)
        self.completion_ids += ids
        self.mask += [mark] * len(ids)
        self.text += text


# Events of stream_search_loop, in the order they happen.
@dataclass(frozen=True, slots=True)
class ModelText:
    """Text (and its token ids) the model just generated."""

    text: str
    token_ids: list[int]


@dataclass(frozen=True, slots=True)
class ResultBlock:
    """The result block of the search just done (:class:`SearchDone`), appended to the response."""

    text: str
    token_ids: list[int]
    seconds: float = 0.0
    """How long the search took, queueing included."""
    index_seconds: float = 0.0
    """How long the index took (what the retriever reported, else ``seconds``)."""


@dataclass(frozen=True, slots=True)
class Finished:
    """The loop is done; the trajectory is complete."""

    trajectory: Trajectory


Event = ModelText | SearchIssued | SearchDone | ResultBlock | Finished


class State(Enum):
    GENERATING = "generating"
    SEARCHING = "searching"
    DONE = "done"


@functools.cache
def longest_token(tokenizer: Any) -> int:
    """The most characters one token of ``tokenizer`` stands for (its longest vocabulary entry; a byte-level
    entry has a character per byte, at least as many as it decodes to)."""
    return max(map(len, tokenizer.get_vocab()))


def encode_within(tokenizer: Any, text: str, room: int) -> tuple[list[int], str]:
    """The token ids of a result block, at most ``room`` of them, and the text they stand for.

    Only as much text as ``room`` tokens can cover is tokenised (no token is longer than
    :func:`longest_token`), so a huge block costs no more than the budget. A block that fits is
    tokenised whole, as in training; a cut one is decoded again, so that text and ids agree.
    """
    span = max(room, 0) * longest_token(tokenizer)
    ids = list(tokenizer.encode(text[:span], add_special_tokens=False))
    if len(text) <= span and len(ids) <= room:
        return ids, text
    ids = ids[:room]
    return ids, tokenizer.decode(ids)


async def retrieve(retriever: Retriever, query: str, *, k: int) -> tuple[list[Passage], str, float, float]:
    """Passages for ``query``, the result block to append, and the search's and the index's seconds.

    An empty query skips the index.
    """
    if not query:
        return [], format_result([EMPTY_QUERY_RESULT]), 0.0, 0.0
    started = time.perf_counter()
    found = await retriever.search([query], k=k)
    seconds = time.perf_counter() - started
    passages = list(found.passages[0])
    index_seconds = seconds if found.index_seconds is None else found.index_seconds
    return passages, format_result(passages), seconds, index_seconds


async def stream_search_loop(
    engine: Engine,
    retriever: Retriever,
    prompt_ids: Sequence[int],
    *,
    limits: LoopLimits = LoopLimits(),
    sampling: SamplingOptions = GREEDY,
    request_id: str | None = None,
) -> AsyncIterator[Event]:
    """Run the loop, yielding events as they happen; the last one is :class:`Finished`.

    Closing the iterator early aborts the generation in flight.
    """
    request_id = request_id or uuid.uuid4().hex
    traj = Trajectory(prompt_ids=list(prompt_ids))
    state = State.GENERATING
    while state is not State.DONE:
        if state is State.GENERATING:
            turn_start = len(traj.text)
            stream = engine.generate(
                traj.prompt_ids + traj.completion_ids,
                max_tokens=limits.max_tokens - len(traj.completion_ids),
                stop=(SEARCH_STOP,),
                sampling=sampling,
                request_id=f"{request_id}-{len(traj.searches)}",
            )
            finish = stop = None
            async with aclosing(stream):
                async for chunk in stream:
                    traj._append(chunk.token_ids, chunk.text, 1, chunk.logprobs)
                    if chunk.text or chunk.token_ids:
                        yield ModelText(chunk.text, chunk.token_ids)
                    finish, stop = chunk.finish_reason, chunk.stop_reason
            if stop != SEARCH_STOP:
                traj.finish_reason = "length" if finish == "length" else "stop"
                if finish == "stop" and traj.completion_ids:  # the EOS token: in the ids, not the text
                    traj.eos_text = engine.tokenizer.decode(traj.completion_ids[-1:])
                state = State.DONE
            elif limits.max_searches is not None and len(traj.searches) >= limits.max_searches:
                traj.finish_reason = "search_limit"
                state = State.DONE
            else:
                state = State.SEARCHING
        else:
            query = extract_query(traj.text[turn_start:]) or ""
            yield SearchIssued(len(traj.searches), query)
            passages, block, seconds, index_seconds = await retrieve(retriever, query, k=limits.k)
            room = limits.max_tokens - len(traj.completion_ids)
            ids, block = await asyncio.to_thread(encode_within, engine.tokenizer, block, room)
            search = Search(index=len(traj.searches), query=query, results=passages)
            traj.searches.append(search)
            traj._append(ids, block, 0, None)
            yield SearchDone(search)
            yield ResultBlock(block, ids, seconds, index_seconds)
            if len(traj.completion_ids) >= limits.max_tokens:
                traj.finish_reason = "length"
                state = State.DONE
            else:
                state = State.GENERATING
    yield Finished(traj)


async def run_search_loop(
    engine: Engine,
    retriever: Retriever,
    prompt_ids: Sequence[int],
    *,
    limits: LoopLimits = LoopLimits(),
    sampling: SamplingOptions = GREEDY,
    request_id: str | None = None,
) -> Trajectory:
    """Run the loop to the end and return the :class:`Trajectory`."""
    async with aclosing(
        stream_search_loop(engine, retriever, prompt_ids, limits=limits, sampling=sampling, request_id=request_id)
    ) as events:
        async for event in events:
            if isinstance(event, Finished):
                return event.trajectory
    raise AssertionError("the search loop ended without a Finished event")
