"""Plain-transformers engine: portable, exact, one sequence at a time.

It runs a KV-cached decode loop on a worker thread and streams tokens back to the
event loop, so it never blocks it. Requests are served one after another (no
batching); it exists for CPU training (TRL hands it the policy being trained),
tests and machines without vLLM. Logprobs are those of the model's raw
distribution (temperature 1, no top-k/top-p), as GRPO's importance ratio needs.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch

from research.engines.base import BaseEngine
from research.protocol.engine import Chunk, SamplingOptions, find_stop
from research.protocol.templates import eos_token_ids


class IncrementalDetokenizer:
    """Turns a growing list of token ids into text deltas without re-decoding it all.

    Decodes a small window of recent tokens and holds text back while it ends in
    an incomplete UTF-8 sequence (the replacement character), as vLLM does.
    """

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self._prefix = 0
        self._read = 0

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def add(self, token_id: int) -> str:
        self.ids.append(token_id)
        prefix_text = self._decode(self.ids[self._prefix : self._read])
        full_text = self._decode(self.ids[self._prefix :])
        if len(full_text) > len(prefix_text) and not full_text.endswith("\ufffd"):
            self._prefix, self._read = self._read, len(self.ids)
            return full_text[len(prefix_text) :]
        return ""


def _sample(
    logits: torch.Tensor, sampling: SamplingOptions, generator: torch.Generator | None, seen: list[int],
    generated: list[int],
) -> int:  # fmt: skip
    """One token, by vLLM's rules: logit bias, presence and frequency penalties over ``generated``
    (this call's output), repetition penalty over ``seen`` (prompt and output), then temperature,
    top-k, min-p, top-p."""
    if sampling.logit_bias:
        ids = torch.tensor(list(sampling.logit_bias), device=logits.device)
        logits = logits.index_add(0, ids, torch.tensor(list(sampling.logit_bias.values()), device=logits.device))
    if (sampling.presence_penalty or sampling.frequency_penalty) and generated:
        ids, counts = torch.tensor(generated, device=logits.device).unique(return_counts=True)
        penalty = sampling.presence_penalty + sampling.frequency_penalty * counts.to(logits.dtype)
        logits = logits.index_add(0, ids, -penalty)
    if sampling.repetition_penalty != 1.0 and seen:
        ids = torch.tensor(sorted(set(seen)), device=logits.device)
        picked = logits[ids]
        penalty = min(sampling.repetition_penalty, torch.finfo(logits.dtype).max)  # inf would make 0 * inf = nan
        logits = logits.index_copy(0, ids, torch.where(picked > 0, picked / penalty, picked * penalty))
    if sampling.temperature <= 0:
        return int(torch.argmax(logits))
    logits = logits / sampling.temperature
    if sampling.top_k > 0:
        kth = torch.topk(logits, min(sampling.top_k, logits.numel())).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if sampling.min_p > 0.0:
        probs = probs.masked_fill(probs < sampling.min_p * probs.max(), 0.0)
        probs = probs / probs.sum()
    if sampling.top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)
        drop = torch.cumsum(sorted_probs, dim=-1) - sorted_probs >= sampling.top_p
        probs = probs.scatter(0, order, sorted_probs.masked_fill(drop, 0.0))
    return int(torch.multinomial(probs, 1, generator=generator))


class TransformersEngine(BaseEngine):
    """Generate with a Hugging Face causal LM (``model``) in-process."""

    def __init__(self, model: Any, tokenizer: Any) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.eos_ids = set(eos_token_ids(tokenizer))
        self.max_model_len: int | None = getattr(model.config, "max_position_embeddings", None)
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hf-engine")
        self._closed = False

    @classmethod
    def from_pretrained(cls, path: str, *, dtype: str = "auto", device: str = "cpu") -> TransformersEngine:
        """Load model and tokenizer from a local path or hub id."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device)
        return cls(model, AutoTokenizer.from_pretrained(path))

    async def _generate(
        self, prompt_ids: list[int], max_tokens: int, stop: tuple[str, ...], sampling: SamplingOptions, request_id: str
    ) -> AsyncIterator[Chunk]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Chunk | BaseException] = asyncio.Queue()
        cancelled = threading.Event()

        def emit(item: Chunk | BaseException) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, item)

        def work() -> None:
            try:
                self._decode(prompt_ids, max_tokens, stop, sampling, cancelled, emit)
            except BaseException as exc:  # delivered to the caller, not lost in the thread
                emit(exc)

        self._worker.submit(work)
        try:
            while True:
                item = await queue.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
                if item.finish_reason is not None:
                    return
        finally:
            cancelled.set()

    @torch.inference_mode()
    def _decode(
        self,
        prompt_ids: list[int],
        max_tokens: int,
        stop: tuple[str, ...],
        sampling: SamplingOptions,
        cancelled: threading.Event,
        emit: Callable[[Chunk | BaseException], None],
    ) -> None:
        if cancelled.is_set():
            return
        device = next(self.model.parameters()).device
        generator = torch.Generator(device).manual_seed(sampling.seed) if sampling.seed is not None else None
        detok = IncrementalDetokenizer(self.tokenizer)
        text = ""
        out = self.model(input_ids=torch.tensor([prompt_ids], device=device), use_cache=True)
        seen = list(prompt_ids) if sampling.repetition_penalty != 1.0 else []
        generated: list[int] = []
        for step in range(max_tokens):
            if cancelled.is_set():
                return
            logits = out.logits[0, -1].float()
            token = _sample(logits, sampling, generator, seen, generated)
            generated.append(token)
            if seen:
                seen.append(token)
            logprobs = top = None
            if sampling.logprobs:
                dist = torch.log_softmax(logits, -1)
                logprobs = [float(dist[token])]
                if sampling.top_logprobs:
                    best = torch.topk(dist, min(sampling.top_logprobs, dist.numel()))
                    top = [dict(zip(best.indices.tolist(), best.values.tolist(), strict=True))]
            if token in self.eos_ids:
                emit(Chunk([token], "", logprobs, top, "stop"))
                return
            delta = detok.add(token)
            hit = find_stop(text + delta, stop, len(text)) if delta else None
            if hit is not None:
                end, matched = hit
                emit(Chunk([token], (text + delta)[len(text) : end], logprobs, top, "stop", matched))
                return
            text += delta
            last = step == max_tokens - 1
            emit(Chunk([token], delta, logprobs, top, "length" if last else None))
            if not last:
                out = self.model(
                    input_ids=torch.tensor([[token]], device=device),
                    past_key_values=out.past_key_values,
                    use_cache=True,
                )

    async def check_health(self) -> None:
        if self._closed:
            raise RuntimeError("the transformers engine is closed")

    async def close(self) -> None:
        self._closed = True
        self._worker.shutdown(wait=False, cancel_futures=True)
