"""Upstream engine: generation by a running OpenAI-compatible completions server.

This is the scale-out path: N ``vllm serve`` replicas (behind any load balancer)
do the generation while our stateless search servers run the loop. Prompts are
sent as token ids and the server returns token ids (vLLM's ``return_token_ids``),
so nothing is ever re-tokenised. The vLLM extensions used are
``include_stop_str_in_output``, ``stop_token_ids``, ``return_token_ids``,
``return_tokens_as_token_ids`` (top log-probabilities keyed by id) and ``top_k``;
closing the stream aborts the request on the server.

It speaks through the ``openai`` SDK: connection errors, 408, 409, 429 and 5xx are
retried with exponential backoff before a stream starts, and failures are the SDK's
typed errors (``openai.APIConnectionError``, ``openai.BadRequestError``, ...).

A stream that breaks mid-generation (its replica died, a proxy dropped it) is resumed:
the prompt plus every token generated so far goes out again, through the same URL (a
load balancer sends it to a live replica), for the tokens still allowed, up to
``max_resumes`` times. The caller sees one stream without a gap or a repeated token;
greedy decoding continues exactly as the broken stream would have. A stop string cut
in two by the break is still found (:class:`_Boundary`).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

import httpx
import openai

from research.engines.base import BaseEngine
from research.protocol.engine import Chunk, SamplingOptions
from research.protocol.templates import eos_token_ids

log = logging.getLogger("research.engines")

BROKEN = (httpx.TransportError, openai.APIConnectionError)
"""A stream cut mid-generation: the connection went (httpx's error, as the SDK's stream raises it), or the
resumed request could not connect even after the SDK's retries."""


class UpstreamError(RuntimeError):
    """The upstream server broke the protocol (no model, no token ids)."""


class UpstreamEngine(BaseEngine):
    """Generate through ``POST {base_url}/completions`` of a vLLM-compatible server."""

    def __init__(
        self,
        base_url: str,
        tokenizer: Any,
        *,
        model: str | None = None,
        api_key: str | None = None,
        timeout: float = 600.0,
        max_retries: int = 3,
        max_resumes: int = 3,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.tokenizer = tokenizer
        self.model = model
        self.eos_ids = eos_token_ids(tokenizer)
        self.max_model_len: int | None = None
        self.max_resumes = max_resumes
        """Times one generation may be resumed after its stream broke."""
        self._listed = False
        self.client = openai.AsyncOpenAI(
            base_url=self.base_url, api_key=api_key or "none", timeout=timeout, max_retries=max_retries
        )

    async def _model(self) -> str:
        """The served model's name, and its context window where the server reports it (vLLM does)."""
        if self.model is None or not self._listed:
            cards = [card async for card in self.client.models.list()]
            if not cards:
                raise UpstreamError(f"upstream {self.base_url} serves no model")
            card = next((c for c in cards if c.id == self.model), None) if self.model else cards[0]
            self.model = self.model or card.id
            self.max_model_len = getattr(card, "max_model_len", None)
            self._listed = True
        return self.model

    async def _context_window(self) -> int | None:
        await self._model()  # the first call lists the upstream's models, which report their context window
        return self.max_model_len

    async def _generate(
        self, prompt_ids: list[int], max_tokens: int, stop: tuple[str, ...], sampling: SamplingOptions, request_id: str
    ) -> AsyncIterator[Chunk]:
        model = await self._model()
        generated: list[int] = []
        text = ""
        boundary: _Boundary | None = None
        for attempt in range(self.max_resumes + 1):
            prompt = [*prompt_ids, *generated]
            try:
                async with aclosing(self._stream(model, prompt, max_tokens - len(generated), stop, sampling,
                                                 request_id)) as stream:  # fmt: skip
                    async for chunk in stream:
                        if boundary is not None:
                            chunk = boundary.check(chunk, self.tokenizer)
                        generated += chunk.token_ids
                        text += chunk.text
                        yield chunk
                        if chunk.finish_reason is not None:
                            return
                raise UpstreamError(f"the upstream {self.base_url} ended a stream without a finish reason")
            except BROKEN as exc:
                if attempt == self.max_resumes:
                    raise
                log.warning(
                    "the upstream stream broke after %d tokens (%s); resuming from them (%d of %d)",
                    len(generated), type(exc).__name__, attempt + 1, self.max_resumes,
                    extra={"request_id": request_id},
                )  # fmt: skip
                if len(generated) == max_tokens:  # the break came after the last allowed token's chunk
                    yield Chunk([], "", finish_reason="length")
                    return
                boundary = _Boundary.after_text(text, stop)

    async def _stream(
        self,
        model: str,
        prompt_ids: list[int],
        max_tokens: int,
        stop: Sequence[str],
        sampling: SamplingOptions,
        request_id: str,
    ) -> AsyncIterator[Chunk]:
        """One completions stream from the upstream, as chunks (closing it aborts the request there)."""
        vllm: dict[str, Any] = {
            "include_stop_str_in_output": True,
            "stop_token_ids": self.eos_ids,
            "top_k": sampling.top_k if sampling.top_k > 0 else -1,
            "min_p": sampling.min_p,
            "repetition_penalty": sampling.repetition_penalty,
            "return_token_ids": True,
            "return_tokens_as_token_ids": True,
        }
        stream = await self.client.completions.create(
            model=model,
            prompt=prompt_ids,
            max_tokens=max_tokens,
            stop=list(stop) or openai.omit,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            seed=sampling.seed if sampling.seed is not None else openai.omit,
            presence_penalty=sampling.presence_penalty,
            frequency_penalty=sampling.frequency_penalty,
            logit_bias={str(t): b for t, b in sampling.logit_bias.items()} if sampling.logit_bias else openai.omit,
            logprobs=sampling.top_logprobs if sampling.logprobs else openai.omit,
            stream=True,
            extra_body=vllm,
            extra_headers={"X-Request-Id": request_id},
        )
        async with stream:
            async for completion in stream:
                for choice in completion.choices:
                    yield _chunk(choice, sampling)

    async def check_health(self) -> None:
        """The upstream lists its models (a quick request that needs its engine up)."""
        self._listed = False
        await self._model()

    async def close(self) -> None:
        await self.client.close()


@dataclass(slots=True)
class _Boundary:
    """Where a broken stream was resumed: finds a stop string that began before the break and ends after it.

    The resumed request's server matches stop strings in its own output only, so it cannot see
    one whose first part is in the prompt it was sent. ``before`` is the text before the break
    such a match could start in; ``after`` what has come since, until it is too long for any
    stop string to span the break.
    """

    before: str
    stop: Sequence[str]
    reach: int
    """How far past the break a stop string can end: the longest one's length less one."""
    after: str = ""

    @classmethod
    def after_text(cls, text: str, stop: Sequence[str]) -> _Boundary | None:
        reach = max((len(s) for s in stop), default=0) - 1
        return cls(text[-reach:], stop, reach) if reach > 0 and text else None

    def check(self, chunk: Chunk, tokenizer: Any) -> Chunk:
        """``chunk`` cut after its token that completes a stop string spanning the break (finish reason ``stop``),
        or ``chunk`` as it came."""
        if len(self.after) >= self.reach:  # no stop string can span the break any more
            return chunk
        text = self.before + self.after + chunk.text
        spanning = [(i + len(s), s) for s in self.stop if 0 <= (i := text.find(s)) < len(self.before)]
        if not spanning:
            self.after += chunk.text
            return chunk
        end, found = min(spanning)
        end -= len(self.before) + len(self.after)  # in the chunk's text
        cut = chunk.upto(end, tokenizer)
        cut.stop_reason = found
        return cut


def _top(alternatives: dict[str, float] | None) -> dict[int, float]:
    """vLLM's top log-probabilities with ``return_tokens_as_token_ids`` (keys ``"token_id:123"``), keyed by id."""
    return {int(key.rpartition(":")[2]): lp for key, lp in (alternatives or {}).items()}


def _chunk(choice: Any, sampling: SamplingOptions) -> Chunk:
    token_ids = getattr(choice, "token_ids", None)
    if token_ids is None:
        raise UpstreamError("the upstream server returned no token_ids; it must support vLLM's return_token_ids")
    logprobs = choice.logprobs if sampling.logprobs else None
    stop_reason = getattr(choice, "stop_reason", None)
    return Chunk(
        token_ids=list(token_ids),
        text=choice.text or "",
        logprobs=list(logprobs.token_logprobs) if logprobs else None,
        top_logprobs=[_top(top) for top in logprobs.top_logprobs or []] if logprobs and sampling.top_logprobs else None,
        finish_reason=choice.finish_reason,
        stop_reason=stop_reason if isinstance(stop_reason, str) else None,
    )
