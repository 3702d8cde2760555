"""The engine contract: the one small interface every generation engine implements.

An engine continues a sequence of token ids and streams what it generates as
:class:`Chunk` objects. The contract, checked by ``tests/engines/test_contract.py``
for every engine (the implementations live in :mod:`research.engines`, which depends on
this module and never the reverse):

* generation stops at the first stop string in the generated text, even when it
  spans several tokens; the chunks' ``token_ids`` then end with the token that
  completed it, and their joined ``text`` ends with the stop string itself;
* generation stops at an end-of-sequence token (which is included in
  ``token_ids`` but not in ``text``), after ``max_tokens`` tokens, or when the
  sequence fills the model's context window (``max_model_len``): a prompt that
  already fills it yields one empty chunk with finish reason ``length``;
* the last chunk carries ``finish_reason``; ``stop_reason`` names the stop string
  matched (None for EOS and for the length limit);
* with ``sampling.logprobs``, ``logprobs`` holds each token's log-probability under the model's
  raw distribution; with ``sampling.top_logprobs`` > 0 too, ``top_logprobs`` holds the most
  likely tokens at each place (at least that many, id to log-probability);
* leaving the ``async for`` early (``break``, task cancellation, ``aclose()``)
  aborts the request on the engine.

Engines are async and safe to call concurrently; each decides how to batch.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

FinishReason = Literal["stop", "length"]


@dataclass(frozen=True, slots=True)
class SamplingOptions:
    """How to pick tokens. ``temperature=0`` is greedy; ``top_k <= 0``, ``min_p=0`` and
    ``repetition_penalty=1`` disable those (vLLM's definitions)."""

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    seed: int | None = None
    logprobs: bool = False
    """Also return the log-probability of each sampled token under the model."""
    top_logprobs: int = 0
    """With ``logprobs``, also the most likely tokens at each place, this many (0: none)."""
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    """OpenAI's penalties, over the tokens generated in this call: ``presence_penalty`` once for a
    token that occurred, ``frequency_penalty`` for each occurrence, taken off its logit."""
    logit_bias: Mapping[int, float] | None = None
    """Added to the logits of these token ids before sampling (OpenAI's, keyed by int)."""


GREEDY = SamplingOptions(temperature=0.0)


@dataclass(slots=True)
class Chunk:
    """What one engine step produced: new token ids, their text, maybe their logprobs."""

    token_ids: list[int]
    text: str
    logprobs: list[float] | None = None
    top_logprobs: list[dict[int, float]] | None = None
    """Per token, the most likely tokens there (``SamplingOptions.top_logprobs`` of them or more)."""
    finish_reason: FinishReason | None = None
    stop_reason: str | None = None

    def head(self, tokens: int, tokenizer: Any, text: str | None = None) -> Chunk:
        """The chunk's first ``tokens`` tokens, as the last chunk of a stop (finish reason ``stop``); their text is
        ``text`` when known (up to a stop string), else decoded."""
        top = self.top_logprobs[:tokens] if self.top_logprobs is not None else None
        logprobs = self.logprobs[:tokens] if self.logprobs is not None else None
        if text is None:
            text = self.text if tokens == len(self.token_ids) else tokenizer.decode(self.token_ids[:tokens])
        return Chunk(self.token_ids[:tokens], text, logprobs, top, "stop")

    def upto(self, end: int, tokenizer: Any) -> Chunk:
        """The chunk cut after its token that completes its text up to ``end`` (a stop string's end)."""
        ids = self.token_ids
        n = next((n for n in range(1, len(ids)) if len(tokenizer.decode(ids[:n])) >= end), len(ids))
        return self.head(n, tokenizer, self.text[:end])


def find_stop(text: str, stop: Sequence[str], new_from: int) -> tuple[int, str] | None:
    """End offset and string of the first stop in ``text`` that ends after ``new_from``.

    Used by engines that detect stop strings themselves, and by the loop for the client's: only stops
    overlapping the newest text are looked for, so a long generation is not rescanned each step.

    >>> find_stop("a </search> b", ["</search>"], 5)
    (11, '</search>')
    """
    best: tuple[int, str] | None = None
    for s in stop:
        pos = text.find(s, max(0, new_from - len(s) + 1))
        if pos >= 0 and (best is None or pos + len(s) < best[0]):
            best = (pos + len(s), s)
    return best


@runtime_checkable
class Engine(Protocol):
    """Continue token ids; see the module docstring for the contract."""

    tokenizer: Any
    """A Hugging Face tokenizer of the served model (templates, result blocks)."""
    max_model_len: int | None
    """Context window (prompt + generated tokens); None when the engine cannot tell."""

    # fmt: off
    def generate(
        self, prompt_ids: Sequence[int], *, max_tokens: int, stop: Sequence[str] = (),
        sampling: SamplingOptions = GREEDY, request_id: str | None = None,
    ) -> AsyncIterator[Chunk]:
        """Continue ``prompt_ids`` with at most ``max_tokens`` tokens, streamed as chunks (see the contract above)."""
        ...
    # fmt: on

    async def check_health(self) -> None:
        """Return if the engine can serve; raise with the cause if not (a dead engine core, an unreachable upstream)."""
        ...

    async def close(self) -> None: ...
