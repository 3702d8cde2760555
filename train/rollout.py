"""GRPO rollouts through the shared search loop, and the shared reward, for TRL's ``GRPOTrainer``.

:class:`SearchRollouts` is TRL's ``rollout_func``: for every prompt TRL hands it (each
question already repeated ``num_generations`` times by TRL's sampler) it runs
:func:`~research.protocol.run_search_loop` and returns the token ids, the sampling
logprobs and ``env_mask`` — the loop's own mask, 1 for tokens the model generated
and 0 for retrieved ``<result>`` tokens — which TRL multiplies into the loss mask
of the policy-gradient and KL terms. Nothing is re-tokenised: the ids are the ids
the loop produced.

:func:`research_reward` is the shared reward (F1 / 0.1 / 0) read from the completion
text TRL decodes from those ids.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from typing import Any

from research.engines.base import Engine, SamplingOptions
from research.protocol import LoopLimits, Retriever, Trajectory, render_prompt, reward, run_search_loop


class SearchRollouts:
    """TRL ``rollout_func`` running the ReSearch search loop on the policy being trained.

    The loop is async; TRL calls rollouts synchronously, so they run on a private
    event loop in a background thread (the engine and retriever live there too).
    """

    def __init__(self, retriever: Retriever, *, template: str, top_k: int, max_response_tokens: int) -> None:
        self.retriever, self.template = retriever, template
        self.limits = LoopLimits(max_tokens=max_response_tokens, top_k=top_k)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="rollouts", daemon=True)
        self._thread.start()
        self._engine: Engine | None = None
        self.last: list[Trajectory] = []
        """The trajectories of the latest call (for logging and tests)."""

    def engine(self, trainer: Any) -> Engine:
        """The policy itself as an engine: generation always sees the current weights."""
        if self._engine is None:
            from research.engines.hf import TransformersEngine

            model = trainer.accelerator.unwrap_model(trainer.model)
            self._engine = TransformersEngine(model, trainer.processing_class)
        return self._engine

    def __call__(self, prompts: Sequence[Any], trainer: Any) -> dict[str, list[Any]]:
        was_training = trainer.model.training
        engine = self.engine(trainer)
        tok = engine.tokenizer
        sampling = SamplingOptions(temperature=trainer.temperature, top_p=trainer.top_p, logprobs=True)

        async def rollouts() -> list[Trajectory]:
            return list(
                await asyncio.gather(
                    *(
                        run_search_loop(
                            engine,
                            self.retriever,
                            tok.encode(render_prompt(question, self.template, tok)),
                            limits=self.limits,
                            sampling=sampling,
                        )
                        for question in prompts
                    )
                )
            )

        try:
            trajs = asyncio.run_coroutine_threadsafe(rollouts(), self.loop).result()
        finally:
            trainer.model.train(was_training)
        self.last = trajs
        metrics = trainer._metrics["train" if was_training else "eval"]  # TRL averages these per logged step
        metrics["well_formed"].append(sum(t.well_formed for t in trajs) / len(trajs))
        metrics["searches"].append(sum(len(t.searches) for t in trajs) / len(trajs))
        return {
            "prompt_ids": [t.prompt_ids for t in trajs],
            "completion_ids": [t.completion_ids for t in trajs],
            "logprobs": [[lp if lp is not None else 0.0 for lp in (t.logprobs or [])] for t in trajs],
            "env_mask": [t.mask for t in trajs],
            # Extra keys reach the reward function and the step log.
            "ended_with_eos": [t.ended_with_eos for t in trajs],
            "searches": [len(t.searches) for t in trajs],
        }

    def close(self) -> None:
        """Close the retriever (when it can be) and stop the rollout thread."""
        if close := getattr(self.retriever, "close", None):
            asyncio.run_coroutine_threadsafe(close(), self.loop).result(timeout=30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)


def research_reward(
    completions: list[str], answers: list[list[str]], ended_with_eos: list[bool], **_: Any
) -> list[float]:
    """The shared ReSearch reward of each completion, from its text (TRL reward-function signature)."""
    return [
        reward(text, golds, ended_with_eos=eos)
        for text, golds, eos in zip(completions, answers, ended_with_eos, strict=True)
    ]
