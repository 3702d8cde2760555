"""GRPO with rollouts on a colocated vLLM (vLLM's CPU build here): TRL pushes the policy's
weights into it every step, and the shared search loop runs on it through ``LLMEngine``."""

from __future__ import annotations

import torch

from research.engines.vllm_engine import LLMEngine
from research.train.config import TrainConfig
from research.train.trainer import build_trainer
from tests.support.rollouts import record_rollouts
from tests.support.scripted import SCRIPT_QUESTION


def test_grpo_rollouts_run_the_search_loop_on_a_colocated_vllm_kept_in_sync(train_values):
    cfg = TrainConfig(**{**train_values, "generation": "vllm", "max_steps": 1, "save_steps": 100})
    trainer, rollouts = build_trainer(cfg)
    recorded = record_rollouts(trainer)
    try:
        # Make the policy differ from the checkpoint vLLM loaded from disk.
        policy = trainer.accelerator.unwrap_model(trainer.model)
        with torch.no_grad():
            policy.model.norm.weight.mul_(1.25)
        served = trainer.vllm_generation.llm.llm_engine.model_executor.driver_worker.model_runner.model

        def in_sync() -> bool:  # vLLM holds the checkpoint's bf16, the policy trains in fp32
            return torch.allclose(served.model.norm.weight.float(), policy.model.norm.weight.float(), rtol=1e-2)

        assert not in_sync()
        trainer.train()
        assert isinstance(rollouts.engine(trainer), LLMEngine)
        # Exact behaviour only on the question the scripted model was trained on.
        last, tok = recorded[-1], trainer.processing_class
        trained = [i for i, ids in enumerate(last["prompt_ids"]) if SCRIPT_QUESTION in tok.decode(ids)]
        assert trained  # results masked:
        assert all(last["searches"][i] and 0 in last["env_mask"][i] and last["well_formed"][i] for i in trained)
        # The vLLM that generated held the policy's weights.
        assert in_sync()
        logs = {k: v for entry in trainer.state.log_history for k, v in entry.items()}
        # vLLM's sampling log-probabilities agree with the trainer's for the same tokens.
        assert logs["sampling/sampling_logp_difference/mean"] < 0.05
        # Logged through TRL's log_metric; half the rollouts are the trained question's (one search, well-formed).
        assert logs["searches"] >= 0.5 and 0.5 <= logs["well_formed"] <= 1.0
    finally:
        rollouts.close()
