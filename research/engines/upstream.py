"""Upstream engine: generation by a running OpenAI-compatible completions server.

This is the scale-out path: N ``vllm serve`` replicas (behind any load balancer)
do the generation while our stateless search servers run the loop. Prompts are
sent as token ids and the server returns token ids (vLLM's ``return_token_ids``),
so nothing is ever re-tokenised. The vLLM extensions used are
``include_stop_str_in_output``, ``stop_token_ids``, ``return_token_ids`` and
``top_k``; closing the stream aborts the request on the server.

It speaks through the ``openai`` SDK: connection errors, 408, 409, 429 and 5xx are
retried with exponential backoff before a stream starts, and failures are the SDK's
typed errors (``openai.APIConnectionError``, ``openai.BadRequestError``, ...).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

import openai

from research.engines.base import GREEDY, Chunk, SamplingOptions, context_full, fit_max_tokens
from research.protocol.templates import eos_token_ids


class UpstreamError(RuntimeError):
    """The upstream server broke the protocol (no model, no token ids)."""


class UpstreamEngine:
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
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.tokenizer = tokenizer
        self.model = model
        self.eos_ids = eos_token_ids(tokenizer)
        self.max_model_len: int | None = None
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

    async def generate(
        self,
        prompt_ids: Sequence[int],
        *,
        max_tokens: int,
        stop: Sequence[str] = (),
        sampling: SamplingOptions = GREEDY,
        request_id: str | None = None,
    ) -> AsyncIterator[Chunk]:
        model = await self._model()
        max_tokens = fit_max_tokens(max_tokens, len(prompt_ids), self.max_model_len)
        if max_tokens == 0:
            yield context_full()
            return
        vllm: dict[str, Any] = {
            "include_stop_str_in_output": True,
            "stop_token_ids": self.eos_ids,
            "top_k": sampling.top_k if sampling.top_k > 0 else -1,
            "min_p": sampling.min_p,
            "repetition_penalty": sampling.repetition_penalty,
            "return_token_ids": True,
        }
        stream = await self.client.completions.create(
            model=model,
            prompt=list(prompt_ids),
            max_tokens=max_tokens,
            stop=list(stop) or openai.omit,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            seed=sampling.seed if sampling.seed is not None else openai.omit,
            logprobs=0 if sampling.logprobs else openai.omit,
            stream=True,
            extra_body=vllm,
            extra_headers={"X-Request-Id": request_id} if request_id else None,
        )
        async with stream:
            async for completion in stream:
                for choice in completion.choices:
                    yield _chunk(choice, sampling.logprobs)

    async def check_health(self) -> None:
        """The upstream lists its models (a quick request that needs its engine up)."""
        self._listed = False
        await self._model()

    async def close(self) -> None:
        await self.client.close()


def _chunk(choice: Any, want_logprobs: bool) -> Chunk:
    token_ids = getattr(choice, "token_ids", None)
    if token_ids is None:
        raise UpstreamError("the upstream server returned no token_ids; it must support vLLM's return_token_ids")
    logprobs = choice.logprobs
    stop_reason = getattr(choice, "stop_reason", None)
    return Chunk(
        token_ids=list(token_ids),
        text=choice.text or "",
        logprobs=list(logprobs.token_logprobs) if want_logprobs and logprobs else None,
        finish_reason=choice.finish_reason,
        stop_reason=stop_reason if isinstance(stop_reason, str) else None,
    )
