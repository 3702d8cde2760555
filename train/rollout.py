"""GRPO rollouts through the shared search loop, and the shared reward, for TRL's ``GRPOTrainer``.

:class:`SearchRollouts` is TRL's ``rollout_func``: for every prompt TRL hands it (each
question already repeated ``num_generations`` times by TRL's sampler) it runs
:func:`~research.protocol.run_search_loop` and returns the token ids, the sampling
logprobs and ``env_mask`` — the loop's own mask, 1 for tokens the model generated
and 0 for those the environment inserted — which TRL multiplies into the loss mask
of the policy-gradient and KL terms. Nothing is re-tokenised: the ids are the ids
the loop produced. The policy generates through :func:`policy_engine`: TRL's vLLM
(colocated or a server, kept in sync with the weights) or the model itself.

:func:`research_reward` is the shared reward: the model's protocol's, the reference
code's (ReSearch: format, then EOS, then F1 / 0.1; Search-R1: exact match; ReCall: EOS,
format, F1 / 0.1), on the loop's text with the EOS token's text, as the reference reads
it. TRL's own decoded completion drops the EOS token, which the reward needs, so the
rollouts pass the text along. The protocols' inserted replies (``<result>`` and
``<information>`` blocks, ReCall's tool-response turns) are the mask's 0s.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from typing import Any

from research.protocol import (
    Engine,
    LoopLimits,
    Protocol,
    Retriever,
    SamplingOptions,
    Trajectory,
    choice_sampling,
    get_protocol,
    run_search_loop,
)


class SearchRollouts:
    """TRL ``rollout_func`` running the search loop, in the model's protocol, on the policy being trained.

    The loop is async; TRL calls rollouts synchronously, so they run on a private
    event loop in a background thread (the engine and retriever live there too).
    """

    def __init__(
        self, retriever: Retriever, *, template: str, k: int | None, max_response_tokens: int, protocol: str,
        seed: int | None = None,
    ) -> None:  # fmt: skip
        self.retriever, self.template, self.protocol = retriever, template, get_protocol(protocol)
        self.seed = seed
        """Seeds the rollouts: the ``i``-th prompt of a call samples with :func:`~research.protocol.choice_sampling`'s
        seed, so a group of one question's copies gets the choices of a ``research-serve`` request with ``n`` and
        this ``seed``. None (training's default): unseeded."""
        self.limits = LoopLimits(max_tokens=max_response_tokens, k=k)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="rollouts", daemon=True)
        self._thread.start()
        self._engine: Engine | None = None

    def engine(self, trainer: Any) -> Engine:
        """The engine the policy generates with (made on first use)."""
        if self._engine is None:
            self._engine = policy_engine(trainer)
        return self._engine

    def __call__(self, prompts: Sequence[Any], trainer: Any) -> dict[str, list[Any]]:
        was_training = trainer.model.training
        engine = self.engine(trainer)
        if trainer.args.use_vllm and trainer.args.vllm_mode == "server":
            trainer.accelerator.wait_for_everyone()  # the main process has finished pushing the new weights
        tok = engine.tokenizer
        sampling = SamplingOptions(temperature=trainer.temperature, top_p=trainer.top_p, logprobs=True, seed=self.seed)

        texts = [self.protocol.render_prompt(question, self.template, tok) for question in prompts]

        rollouts = rollout_batch(
            engine, self.retriever, [tok.encode(text) for text in texts], limits=self.limits, sampling=sampling,
            protocol=self.protocol,
        )  # fmt: skip
        try:
            trajs = asyncio.run_coroutine_threadsafe(rollouts, self.loop).result()
        finally:
            trainer.model.train(was_training)
        return {
            "prompt_ids": [t.prompt_ids for t in trajs],
            "completion_ids": [t.completion_ids for t in trajs],
            "logprobs": [[lp if lp is not None else 0.0 for lp in (t.logprobs or [])] for t in trajs],
            "env_mask": [t.mask for t in trajs],
            # Extra keys reach the reward function.
            "responses": [t.response for t in trajs],
            "eos_token": [tok.eos_token] * len(trajs),
            "protocol": [self.protocol.name] * len(trajs),
            "searches": [len(t.searches) for t in trajs],
            "well_formed": [t.well_formed for t in trajs],
        }

    def close(self) -> None:
        """Close the retriever (when it can be) and the engine, and stop the rollout thread."""
        for part in (self.retriever, self._engine):
            if close := getattr(part, "close", None):
                asyncio.run_coroutine_threadsafe(close(), self.loop).result(timeout=30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)


async def rollout_batch(
    engine: Engine,
    retriever: Retriever,
    prompts: Sequence[Sequence[int]],
    *,
    limits: LoopLimits,
    sampling: SamplingOptions,
    protocol: Protocol,
) -> list[Trajectory]:
    """The rollouts of one batch, all at once: prompt ``i`` samples with :func:`~research.protocol.choice_sampling`
    ``(sampling, i)``, so a group of one prompt's copies is what ``research-serve`` gives for ``n`` and ``seed``."""
    loops = (
        run_search_loop(engine, retriever, ids, limits=limits, sampling=choice_sampling(sampling, i), protocol=protocol)
        for i, ids in enumerate(prompts)
    )
    return list(await asyncio.gather(*loops))


def policy_engine(trainer: Any) -> Engine:
    """The current policy as an engine, always generating with the weights being trained.

    With ``use_vllm``, TRL owns the vLLM and pushes the policy's weights into it before
    each generation: in colocate mode its in-process ``vllm.LLM``, in server mode a
    ``vllm serve`` that is OpenAI-compatible, reached here as an upstream engine.
    Without it, the policy model generates itself (transformers).
    """
    args, tokenizer = trainer.args, trainer.processing_class
    if not args.use_vllm:
        from research.engines.hf import TransformersEngine

        return TransformersEngine(trainer.accelerator.unwrap_model(trainer.model), tokenizer)
    if args.vllm_mode == "colocate":
        from research.engines.vllm_engine import LLMEngine

        return LLMEngine(trainer.vllm_generation.llm, tokenizer)
    from research.engines.upstream import UpstreamEngine

    return UpstreamEngine(args.vllm_server_base_url.rstrip("/") + "/v1", tokenizer)


def research_reward(
    completions: list[str],
    answers: list[list[str]],
    responses: list[str],
    eos_token: list[str],
    protocol: list[str],
    searches: list[int] | None = None,
    well_formed: list[bool] | None = None,
    log_metric: Callable[[str, float], None] | None = None,
    **_: Any,
) -> list[float]:
    """The shared reward of each rollout, its ``protocol``'s (TRL reward-function signature).

    Scores ``responses`` (each rollout's text, EOS text included, from :class:`SearchRollouts`)
    against the tokenizer's ``eos_token``; TRL's ``completions``
    (decoded without the EOS token) are not used. Also logs, through TRL's
    ``log_metric``, the share of well-formed rollouts and the searches per rollout.
    """
    if log_metric and searches is not None and well_formed is not None:
        log_metric("well_formed", sum(well_formed) / len(well_formed))
        log_metric("searches", sum(searches) / len(searches))
    rows = zip(responses, answers, eos_token, protocol, strict=True)
    return [get_protocol(name).reward(text, golds, eos_token=eos) for text, golds, eos, name in rows]
