"""One choice's response text as the API shows it: the client's stop held back, reasoning split from content, and
each model token's log-probability beside the text it wrote.

The loop (:mod:`research.protocol.loop`) streams the model's text and the inserted replies;
:class:`ChoiceText` turns each into :class:`~research.wire.Reasoning` and
:class:`~research.wire.Content` pieces:

* the client's stop strings: text that may be the start of one is held back until the next text
  tells (a stream never shows part of a stop string); when the response ends at one, the stop
  string is left out unless ``include_stop_str_in_output``;
* the model's tokens are listed (``logprobs``) with the text they wrote: as ``content`` where it is
  the answer's, else as ``reasoning``; a token that wrote nothing visible yet (a tag, a held-back
  character) goes with the next text that shows, and at the end with the content if there is
  any. Inserted tokens (result blocks, tool responses) are never listed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from research.protocol import ModelText, Protocol, Trajectory
from research.server.render import splitter
from research.wire import ChoiceLogprobs, Content, Reasoning, TokenLogprob, TopLogprob

LOWEST_LOGPROB = -9999.0
"""What a log-probability of minus infinity is sent as (JSON has no infinity; vLLM's value)."""


def token_logprob(tokenizer: Any, token: int, logprob: float, top: dict[int, float] | None, n: int) -> TokenLogprob:
    """OpenAI's entry for ``token``: its text and bytes (as vLLM writes them), its log-probability, the ``n`` most
    likely tokens there."""
    best = sorted((top or {}).items(), key=lambda kv: -kv[1])[:n]
    alternatives = [_top(tokenizer, t, lp) for t, lp in best]
    return TokenLogprob(**_top(tokenizer, token, logprob).model_dump(), top_logprobs=alternatives)


def _top(tokenizer: Any, token: int, logprob: float) -> TopLogprob:
    text = tokenizer.decode([token])
    return TopLogprob(token=text, logprob=max(logprob, LOWEST_LOGPROB), bytes=list(text.encode("utf-8")))


class ChoiceText:
    """Choice ``choice``'s text and log-probabilities, piece by piece (see the module docstring)."""

    def __init__(
        self,
        protocol: Protocol,
        tokenizer: Any,
        *,
        choice: int = 0,
        raw: bool = False,
        stop: Sequence[str] = (),
        include_stop: bool = False,
        top_logprobs: int | None = None,
    ) -> None:
        self.split = splitter(protocol, raw=raw)
        self.tokenizer, self.choice, self.stop, self.include_stop = tokenizer, choice, tuple(stop), include_stop
        self.top_logprobs = top_logprobs
        """None: no log-probabilities; else how many of the most likely tokens to list at each place."""
        self.held = ""
        """Text that may be the start of a stop string."""
        self.pending: list[TokenLogprob] = []
        """The model's tokens whose text has not shown yet."""
        self.reasoning: list[str] = []
        self.content: list[str] = []
        self.logprobs = ChoiceLogprobs(content=[], reasoning=[]) if top_logprobs is not None else None

    def model(self, event: ModelText) -> list[Reasoning | Content]:
        """The pieces of text the model just wrote."""
        if self.top_logprobs is not None and event.logprobs is not None:
            tops = event.top_logprobs or [None] * len(event.token_ids)
            self.pending += [
                token_logprob(self.tokenizer, token, lp, top, self.top_logprobs)
                for token, lp, top in zip(event.token_ids, event.logprobs, tops, strict=True)
            ]
        return self._show(self._release(event.text))

    def inserted(self, text: str) -> list[Reasoning | Content]:
        """The pieces of a reply the server inserted (no stop string is looked for in it)."""
        held, self.held = self.held, ""
        return self._show(held) + self._show(text, retrieved=True)

    def close(self, traj: Trajectory) -> list[Reasoning | Content]:
        """The last pieces: what was held back (less the stop string that ended the response, unless kept)."""
        held, self.held = self.held, ""
        if isinstance(traj.stop_reason, str) and not self.include_stop and held.endswith(traj.stop_reason):
            held = held[: len(held) - len(traj.stop_reason)]
        pieces = self._show(held) + self._pieces(self.split.close())
        if self.pending:  # tokens that never showed text (a closing tag, EOS, the stop string)
            pieces.append(self._piece(Content if any(self.content) else Reasoning, "", False, self.pending))
            self.pending = []
        return pieces

    def _release(self, text: str) -> str:
        """The part of the model's text that cannot be the start of a stop string; the rest is held back (a whole
        stop string too: the response may have ended at it)."""
        if not self.stop:
            return text
        text, self.held = self.held + text, ""
        keep = max((n for s in self.stop for n in range(min(len(s), len(text)), 0, -1)
                    if text.endswith(s[:n])), default=0)  # fmt: skip
        if keep:
            text, self.held = text[:-keep], text[-keep:]
        return text

    def _show(self, text: str, retrieved: bool = False) -> list[Reasoning | Content]:
        return self._pieces(self.split.feed(text), retrieved) if text else []

    def _pieces(self, parts: tuple[str, str], retrieved: bool = False) -> list[Reasoning | Content]:
        reasoning, content = parts
        self.reasoning.append(reasoning)
        self.content.append(content)
        tokens, self.pending = (self.pending, []) if reasoning or content else ([], self.pending)
        pieces = []
        if reasoning:
            pieces.append(self._piece(Reasoning, reasoning, retrieved, [] if content else tokens))
        if content:
            pieces.append(self._piece(Content, content, retrieved, tokens))
        return pieces

    def _piece(
        self, kind: type[Reasoning | Content], text: str, retrieved: bool, tokens: list[TokenLogprob]
    ) -> Reasoning | Content:
        logprobs = None
        if self.logprobs is not None:
            side = "content" if kind is Content else "reasoning"
            logprobs = ChoiceLogprobs(**{side: tokens})
            self.logprobs.add(logprobs)
        return kind(text, retrieved, self.choice, logprobs)
