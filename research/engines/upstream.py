"""Upstream engine: generation by a running OpenAI-compatible completions server.

This is the scale-out path: N ``vllm serve`` replicas (behind any load balancer)
do the generation while our stateless search servers run the loop. Prompts are
sent as token ids and the server returns token ids (vLLM's ``return_token_ids``),
so nothing is ever re-tokenised. The vLLM extensions used are
``include_stop_str_in_output``, ``stop_token_ids``, ``return_token_ids`` and
``top_k``; closing the stream aborts the request on the server.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

import httpx

from research.engines.base import GREEDY, Chunk, SamplingOptions, context_full, fit_max_tokens
from research.protocol.templates import eos_token_ids


class UpstreamError(RuntimeError):
    """The upstream server answered with an error or broke the protocol."""


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
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.tokenizer = tokenizer
        self.model = model
        self.eos_ids = eos_token_ids(tokenizer)
        self.max_model_len: int | None = None
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._card: dict[str, Any] | None = None
        self._client = httpx.AsyncClient(base_url=self.base_url, headers=headers, timeout=timeout)

    async def _model(self) -> str:
        """The served model's name, and its context window where the server reports it (vLLM does)."""
        if self.model is None or self._card is None:
            response = await self._client.get("/models")
            response.raise_for_status()
            cards = response.json()["data"]
            if not cards:
                raise UpstreamError(f"upstream {self.base_url} serves no model")
            self._card = next((c for c in cards if c["id"] == self.model), {}) if self.model else cards[0]
            self.model = self.model or self._card["id"]
            self.max_model_len = self._card.get("max_model_len")
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
        body: dict[str, Any] = {
            "model": model,
            "prompt": list(prompt_ids),
            "max_tokens": max_tokens,
            "stop": list(stop),
            "include_stop_str_in_output": True,
            "stop_token_ids": self.eos_ids,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "top_k": sampling.top_k if sampling.top_k > 0 else -1,
            "min_p": sampling.min_p,
            "repetition_penalty": sampling.repetition_penalty,
            "stream": True,
            "return_token_ids": True,
        }
        if sampling.seed is not None:
            body["seed"] = sampling.seed
        if sampling.logprobs:
            body["logprobs"] = 0
        headers = {"X-Request-Id": request_id} if request_id else {}
        async with self._client.stream("POST", "/completions", json=body, headers=headers) as response:
            if response.status_code != 200:
                detail = (await response.aread()).decode(errors="replace")
                raise UpstreamError(f"upstream {self.base_url} answered {response.status_code}: {detail}")
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[len("data:") :].strip()
                if data == "[DONE]":
                    return
                payload = json.loads(data)
                if "error" in payload:
                    raise UpstreamError(f"upstream {self.base_url}: {payload['error']}")
                for choice in payload.get("choices", []):
                    yield _chunk(choice, sampling.logprobs)

    async def check_health(self) -> None:
        """The upstream lists its models (a quick request that needs its engine up)."""
        self._card = None
        await self._model()

    async def close(self) -> None:
        await self._client.aclose()


def _chunk(choice: dict[str, Any], want_logprobs: bool) -> Chunk:
    if choice.get("token_ids") is None:
        raise UpstreamError("the upstream server returned no token_ids; it must support vLLM's return_token_ids")
    logprobs = choice.get("logprobs")
    stop_reason = choice.get("stop_reason")
    return Chunk(
        token_ids=list(choice["token_ids"]),
        text=choice.get("text", ""),
        logprobs=list(logprobs["token_logprobs"]) if want_logprobs and logprobs else None,
        finish_reason=choice.get("finish_reason"),
        stop_reason=stop_reason if isinstance(stop_reason, str) else None,
    )
