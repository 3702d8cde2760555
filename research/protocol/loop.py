"""The search loop, shared by serving, training and evaluation, for every protocol.

One loop per sequence::

    GENERATING --the protocol's step: searches, tool calls or a notice--> SEARCHING --reply appended--> GENERATING
        |                                                                     |
        +--the protocol's "done" / budget / search limit----------------------+-----> DONE

A turn ends at one of the protocol's stop strings (ReSearch's ``</search>``), at an
end-of-sequence token (ReCall's turns), at the protocol's per-turn cap or when the budget is
spent; :meth:`Protocol.next_step` reads the turn's text and says what the environment does.
It works on token ids only. The model's tokens are kept exactly as the engine generated them
(mask 1); the environment's reply is tokenised on its own and appended (mask 0), so nothing
the model wrote is ever re-tokenised. The response budget counts model and reply tokens
alike (8192 in the paper).

Choices where the papers are silent (documented in README):

* an empty query is answered without calling the retriever (ReSearch: the reference
  pipeline's ``nothing to search``; see each protocol);
* when the search budget (``max_searches``, counting every reply: searches, tool turns,
  notices) is spent, the next step ends the response with finish reason ``search_limit``;
  a reply that does not fit the token budget is cut and the response ends with ``length``.

Run it with :func:`run_search_loop` (a finished :class:`Trajectory`) or
:func:`stream_search_loop` (events as they happen, for streaming servers).
"""

from __future__ import annotations

import asyncio
import collections
import functools
import time
import typing
import uuid
from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from research.protocol.engine import GREEDY, Chunk, Engine, SamplingOptions, find_stop
from research.protocol.profile import Protocol, Step, TurnEnd
from research.protocol.protocols import RESEARCH
from research.wire import Passage, Search, SearchDone, SearchIssued

LoopFinish = Literal["stop", "length", "search_limit", "tool_calls"]


@dataclass(frozen=True, slots=True)
class Retrieved:
    """What a retriever answers: the passages for each query, and how long the index itself took."""

    passages: list[list[Passage]]
    index_seconds: float | None = None
    """Seconds of embedding and index work (None: not reported); the rest of a search's time was queueing."""


class Retriever(typing.Protocol):
    """Anything that answers a batch of queries with top-``k`` passages each."""

    async def search(self, queries: Sequence[str], *, k: int) -> Retrieved: ...


@dataclass(frozen=True, slots=True)
class LoopLimits:
    """Budgets of one search loop."""

    max_tokens: int = 8192
    """Response tokens, model and retrieved together (the paper's 8192)."""
    max_searches: int | None = None
    """Replies allowed (searches; for tool protocols, tool turns; notices); None leaves only the token budget."""
    k: int | None = None
    """Passages per search; None: the protocol's (ReSearch's 5, Search-R1's 3)."""

    def __post_init__(self) -> None:
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be at least 1, got {self.max_tokens}")
        if self.max_searches is not None and self.max_searches < 0:
            raise ValueError(f"max_searches must be >= 0 or None, got {self.max_searches}")
        if self.k is not None and self.k < 1:
            raise ValueError(f"k must be at least 1, got {self.k}")


@dataclass(frozen=True, slots=True)
class Pending:
    """A turn that called the client's own functions: its calls, and what the server's own calls of the turn found.

    The loop stops there (finish reason ``tool_calls``); it resumes, in a later request, from the
    trajectory's ids and :meth:`reply`, the turn's reply once the client's results are in.
    """

    step: Step
    found: list[list[Passage] | None]
    asked: list[int]
    """The places in the turn of the calls of the client's functions (the others are the server's)."""

    def reply(self, protocol: Protocol, results: Mapping[int, str]) -> str:
        """The reply to the turn, ``results[i]`` the client's result for the turn's ``i``-th call."""
        calls = [replace(call, reply=results[i]) if i in results else call for i, call in enumerate(self.step.calls)]
        return protocol.reply(replace(self.step, calls=calls), self.found)


@dataclass(slots=True)
class Trajectory:
    """A finished (or growing) response: ids, loss mask, logprobs, text and searches."""

    prompt_ids: list[int]
    completion_ids: list[int] = field(default_factory=list)
    mask: list[int] = field(default_factory=list)
    """1 for tokens the model generated, 0 for those the environment inserted (result blocks, tool turns)."""
    logprobs: list[float | None] | None = None
    """Per completion token, when the engine reports them; None at retrieved tokens."""
    text: str = ""
    """The response text: model text and replies, the final EOS excluded."""
    eos_text: str = ""
    """The text of the end-of-sequence token that ended generation ("" when none did)."""
    searches: list[Search] = field(default_factory=list)
    finish_reason: LoopFinish | None = None
    protocol: Protocol = RESEARCH
    pending: Pending | None = None
    """The turn waiting for the client's function results (``finish_reason == "tool_calls"``)."""
    stop_reason: str | int | None = None
    """The client's stop string or stop token that ended the response (its text ends :attr:`text`)."""

    @property
    def ended_with_eos(self) -> bool:
        return self.finish_reason == "stop"

    @property
    def response(self) -> str:
        """The text the reference reward reads: :attr:`text` and the EOS token's text."""
        return self.text + self.eos_text

    @property
    def answer(self) -> str | None:
        return self.protocol.extract_answer(self.response)

    @property
    def well_formed(self) -> bool:
        """The reference's format verdict (for ReSearch tags only; EOS is the reward's separate check)."""
        return self.protocol.well_formed(self.response)

    def _append(self, ids: Sequence[int], text: str, mark: int, logprobs: Sequence[float] | None) -> None:
        if self.logprobs is not None or logprobs is not None:
            if self.logprobs is None:
                self.logprobs = [None] * len(self.completion_ids)
            self.logprobs += list(logprobs) if logprobs is not None else [None] * len(ids)
        self.completion_ids += ids
        self.mask += [mark] * len(ids)
        self.text += text

    def _drop_last(self) -> None:
        """Forget the last token (an EOS the protocol's reference never kept); its text was never added."""
        del self.completion_ids[-1], self.mask[-1]
        if self.logprobs is not None:
            del self.logprobs[-1]


# Events of stream_search_loop, in the order they happen.
@dataclass(frozen=True, slots=True)
class ModelText:
    """Text (and its token ids, with their log-probabilities when asked for) the model just generated."""

    text: str
    token_ids: list[int]
    logprobs: list[float] | None = None
    top_logprobs: list[dict[int, float]] | None = None


@dataclass(frozen=True, slots=True)
class ResultBlock:
    """The environment's reply appended to the response: the result block of the searches just done
    (:class:`SearchDone`), a turn of tool responses, or a notice."""

    text: str
    token_ids: list[int]
    seconds: float = 0.0
    """How long the searches took, queueing included (the longest of them)."""
    index_seconds: float = 0.0
    """How long the index took (what the retriever reported, else ``seconds``)."""
    searches: int = 1
    """Searches the reply answers."""
    notices: int = 0
    """Calls the protocol answered itself (malformed, unknown tool) and invalid-action notices in the reply."""


@dataclass(frozen=True, slots=True)
class Finished:
    """The loop is done; the trajectory is complete."""

    trajectory: Trajectory


Event = ModelText | SearchIssued | SearchDone | ResultBlock | Finished


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


async def retrieve(retriever: Retriever, query: str, *, k: int) -> tuple[list[Passage], float, float]:
    """Passages for ``query``, and the search's and the index's seconds; an empty query or ``k`` 0 skips the index."""
    if not query or k < 1:
        return [], 0.0, 0.0
    started = time.perf_counter()
    found = await retriever.search([query], k=k)
    seconds = time.perf_counter() - started
    index_seconds = seconds if found.index_seconds is None else found.index_seconds
    return list(found.passages[0]), seconds, index_seconds


def _turn_end(finish: str | None, stop: str | None, protocol: Protocol) -> TurnEnd:
    if stop is not None and stop in protocol.stop:
        return "stop"
    return "turn_limit" if finish == "length" else "eos"


class StopWatch:
    """Finds the client's stop strings and stop tokens in what the model writes outside its calls.

    The engine is given the protocol's stop strings only, so a client's stop can never cut a
    search query or a tool call short: the loop reads each turn as it streams, skips a stop the
    model wrote inside a call (:meth:`Protocol.inside_call`), and at one outside cuts the chunk
    after the token that completes it (:attr:`hit`: the stop string, or the stop token's id; a stop
    token is kept in the ids and, like EOS, left out of the text), and the loop leaves the stream,
    which aborts the generation.
    """

    def __init__(self, protocol: Protocol, stop: Sequence[str], stop_ids: Collection[int], tokenizer: Any) -> None:
        self.protocol, self.stops, self.stop_ids, self.tokenizer = protocol, tuple(stop), set(stop_ids), tokenizer
        self.text = ""
        """The turn so far."""
        self.hit: str | int | None = None

    def turn(self) -> None:
        """A new turn starts."""
        self.text = ""

    def check(self, chunk: Chunk) -> Chunk:
        """``chunk``, or its part up to the client's stop that it completes (then :attr:`hit` is set)."""
        if not (self.stops or self.stop_ids):
            return chunk
        if found := self._token(chunk):
            return found
        seen, text = len(self.text), self.text + chunk.text
        while (found := find_stop(text, self.stops, seen)) is not None:
            end, string = found
            if not self.protocol.inside_call(text[: end - len(string)]):
                self.hit = string
                return chunk.upto(end - len(self.text), self.tokenizer)
            seen = end
        self.text = text
        return chunk

    def _token(self, chunk: Chunk) -> Chunk | None:
        for i, token in enumerate(chunk.token_ids):
            if token in self.stop_ids:
                before = self.tokenizer.decode(chunk.token_ids[:i]) if i else ""
                if not self.protocol.inside_call(self.text + before):
                    self.hit = token
                    return chunk.head(i + 1, self.tokenizer, before)  # its text left out, as EOS's
        return None


def choice_sampling(sampling: SamplingOptions, choice: int) -> SamplingOptions:
    """The sampling of choice ``choice`` of a request for several (a GRPO group, OpenAI's ``n``): its seed is the
    request's plus ``choice`` (as vLLM derives its ``n`` children's), so the same request gives the same choices.

    >>> choice_sampling(SamplingOptions(seed=7), 2).seed, choice_sampling(SamplingOptions(), 2).seed
    (9, None)
    >>> choice_sampling(SamplingOptions(seed=2**63 - 1), 1).seed  # a 64-bit seed wraps
    -9223372036854775808
    """
    if sampling.seed is None or choice == 0:
        return sampling
    return replace(sampling, seed=(sampling.seed + choice + 2**63) % 2**64 - 2**63)


def turn_sampling(sampling: SamplingOptions, traj: Trajectory) -> SamplingOptions:
    """The next turn's sampling: the penalties over the model's tokens of earlier turns, as logit bias.

    The engine applies ``presence_penalty``/``frequency_penalty`` to what it generates in the
    turn; the model's tokens of earlier turns are in the prompt by then, so their share goes
    in as bias. Inserted tokens (mask 0: results, tool responses) never count.

    >>> traj = Trajectory([9], completion_ids=[5, 5, 7, 8], mask=[1, 1, 0, 1])
    >>> asked = SamplingOptions(presence_penalty=0.5, frequency_penalty=1.0, logit_bias={8: 2.0})
    >>> turn_sampling(asked, traj).logit_bias  # 5 twice, 8 once, 7 inserted
    {8: 0.5, 5: -2.5}
    """
    if not (sampling.presence_penalty or sampling.frequency_penalty):
        return sampling
    counts = collections.Counter(t for t, model in zip(traj.completion_ids, traj.mask, strict=True) if model)
    bias = dict(sampling.logit_bias or {})
    for token, n in counts.items():
        bias[token] = bias.get(token, 0.0) - sampling.presence_penalty - sampling.frequency_penalty * n
    return replace(sampling, logit_bias=bias) if counts else sampling


async def stream_search_loop(
    engine: Engine,
    retriever: Retriever,
    prompt_ids: Sequence[int],
    *,
    limits: LoopLimits = LoopLimits(),
    sampling: SamplingOptions = GREEDY,
    request_id: str | None = None,
    protocol: Protocol = RESEARCH,
    client_tools: Collection[str] = (),
    stop: Sequence[str] = (),
    stop_token_ids: Collection[int] = (),
) -> AsyncIterator[Event]:
    """Run the loop, yielding events as they happen; the last one is :class:`Finished`.

    ``client_tools`` name the client's own functions: a turn that calls one ends the loop with
    finish reason ``tool_calls`` (:attr:`Trajectory.pending`), its hosted searches done.
    ``stop`` and ``stop_token_ids`` (the client's) end the response where the model writes one
    outside a call (:attr:`Trajectory.stop_reason`); inside a search query or a tool call they are
    text like any other (:class:`StopWatch`).
    Closing the iterator early aborts the generation in flight.
    """
    request_id = request_id or uuid.uuid4().hex
    traj = Trajectory(prompt_ids=list(prompt_ids), protocol=protocol)
    watch = StopWatch(protocol, stop, stop_token_ids, engine.tokenizer)
    rounds = 0
    while True:
        # GENERATING: one turn, to a stop string, EOS, the protocol's turn cap or the budget.
        turn_start = len(traj.text)
        room = limits.max_tokens - len(traj.completion_ids)
        stream = engine.generate(
            traj.prompt_ids + traj.completion_ids,
            max_tokens=min(room, protocol.max_turn_tokens or room),
            stop=protocol.stop,
            sampling=turn_sampling(sampling, traj),
            request_id=f"{request_id}-{rounds}",
        )
        finish = stop = None
        turn_start_ids = len(traj.completion_ids)
        watch.turn()
        async with aclosing(stream):  # leaving it early (the client's stop) aborts the generation
            async for chunk in stream:
                chunk = watch.check(chunk)
                traj._append(chunk.token_ids, chunk.text, 1, chunk.logprobs)
                if chunk.text or chunk.token_ids:
                    yield ModelText(chunk.text, chunk.token_ids, chunk.logprobs, chunk.top_logprobs)
                finish, stop = chunk.finish_reason, chunk.stop_reason
                if watch.hit is not None:
                    break
        if watch.hit is not None:  # the client's stop string or token, written outside a call
            traj.finish_reason, traj.stop_reason = "stop", watch.hit
            break
        spent = len(traj.completion_ids) >= limits.max_tokens or len(traj.completion_ids) == turn_start_ids
        if finish == "length" and spent:  # the budget, or the context window, is full
            traj.finish_reason = "length"
            break
        ended = _turn_end(finish, stop, protocol)
        # The EOS token: in the ids, not the text.
        eos = engine.tokenizer.decode(traj.completion_ids[-1:]) if ended == "eos" and traj.completion_ids else ""
        step = protocol.next_step(traj.text[turn_start:], ended)
        if step.done or (limits.max_searches is not None and rounds >= limits.max_searches):
            traj.finish_reason = "search_limit" if not step.done else "length" if ended == "turn_limit" else "stop"
            traj.eos_text = eos
            break
        # SEARCHING: the environment's reply to the turn, appended as mask-0 tokens.
        rounds += 1
        asked = [i for i, call in enumerate(step.calls) if call.name is not None and call.name in client_tools]
        if step.drop_eos and eos:
            traj._drop_last()
        elif protocol.eos_in_text and eos and not asked:
            traj.text += eos
            yield ModelText(eos, [])
        hosted = [(i, call) for i, call in enumerate(step.calls) if call.query is not None]
        for n, (_, call) in enumerate(hosted):
            yield SearchIssued(len(traj.searches) + n, call.query or "")
        k = limits.k or protocol.default_k
        results = await asyncio.gather(
            *(retrieve(retriever, call.query or "", k=k if call.k is None else call.k) for _, call in hosted)
        )
        found: list[list[Passage] | None] = [None] * len(step.calls)
        searches = []
        for (i, call), (passages, _, _) in zip(hosted, results, strict=True):
            found[i] = passages
            searches.append(Search(index=len(traj.searches) + len(searches), query=call.query or "", results=passages))
        traj.searches += searches
        for search in searches:
            yield SearchDone(search)
        if asked:  # the client runs its functions; the reply waits for their results
            traj.pending, traj.finish_reason, traj.eos_text = Pending(step, found, asked), "tool_calls", eos
            break
        reply = protocol.reply(step, found)
        room = limits.max_tokens - len(traj.completion_ids)
        ids, reply = await asyncio.to_thread(
            encode_within, engine.tokenizer, reply, min(room, protocol.max_reply_tokens or room)
        )
        traj._append(ids, reply, 0, None)
        yield ResultBlock(
            reply,
            ids,
            seconds=max((r[1] for r in results), default=0.0),
            index_seconds=max((r[2] for r in results), default=0.0),
            searches=len(searches),
            notices=sum(call.reply is not None for call in step.calls) + (step.notice is not None),
        )
        if len(traj.completion_ids) >= limits.max_tokens:
            traj.finish_reason = "length"
            break
    yield Finished(traj)


async def run_search_loop(
    engine: Engine,
    retriever: Retriever,
    prompt_ids: Sequence[int],
    *,
    limits: LoopLimits = LoopLimits(),
    sampling: SamplingOptions = GREEDY,
    request_id: str | None = None,
    protocol: Protocol = RESEARCH,
    client_tools: Collection[str] = (),
    stop: Sequence[str] = (),
    stop_token_ids: Collection[int] = (),
) -> Trajectory:
    """Run the loop to the end and return the :class:`Trajectory`."""
    events = stream_search_loop(
        engine, retriever, prompt_ids, limits=limits, sampling=sampling, request_id=request_id, protocol=protocol,
        client_tools=client_tools, stop=stop, stop_token_ids=stop_token_ids,
    )  # fmt: skip
    async with aclosing(events):
        async for event in events:
            if isinstance(event, Finished):
                return event.trajectory
    raise AssertionError("the search loop ended without a Finished event")
