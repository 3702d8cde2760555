"""Retrieved tokens are out of the GRPO loss: proven on TRL's real loss with real rollouts.

The rollouts come from the shared search loop on the scripted model (it searches, so
every completion holds a ``<result>`` block). We perturb the policy's per-token
log-probabilities only at retrieved-token positions and check that the loss and every
parameter gradient are unchanged (bit for bit); the same perturbation at model-token
positions changes both.

Two settings make the gradient non-trivial: advantages are fixed non-zero values (with
near-greedy rollouts a group's rewards tie and GRPO's advantages would be 0), and
log-probabilities are scored at a high temperature (at the sampling one the scripted
model is so confident that every log-probability gradient is 0).
"""

from __future__ import annotations

import pytest
import torch

from research.protocol import response_text, reward
from research.train.config import TrainConfig
from research.train.trainer import build_trainer
from tests.support.rollouts import record_rollouts
from tests.support.scripted import SCRIPT_ANSWER, SCRIPT_QUESTION
from tests.support.training import values_in


@pytest.fixture(scope="module")
def trainer_and_inputs(tmp_path_factory, model_path, script_index):
    """One trainer and one batch of real rollouts for the module: neither test changes the inputs."""
    trainer, rollouts = build_trainer(
        TrainConfig(**values_in(tmp_path_factory.mktemp("masking"), model_path, script_index))
    )
    recorded = record_rollouts(trainer)
    batch = [{"prompt": SCRIPT_QUESTION, "answers": [SCRIPT_ANSWER]}] * 2
    trainer.model.train()
    inputs = trainer._generate_and_score_completions(batch)
    inputs["advantages"] = torch.tensor([1.0, -0.5])
    trainer.current_gradient_accumulation_steps = 1  # set by the training loop outside of a step
    # The scripted model is so sure of its script that d log p is exactly 0 at the sampling
    # temperature: score at a high one instead (TRL divides logits by it), reference included.
    trainer.temperature = 20.0
    ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], dim=1)
    attention = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], dim=1)
    with torch.no_grad():
        ref, *_ = trainer._get_per_token_logps_and_entropies(
            trainer.ref_model, ids, attention, ids.shape[1] - inputs["prompt_ids"].shape[1]
        )
    inputs["ref_per_token_logps"] = ref
    yield trainer, inputs, recorded[-1]
    rollouts.close()


def loss_and_grads(trainer, inputs, positions: torch.Tensor | None) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """TRL's loss and gradients, with the policy's per-token log-probabilities perturbed at ``positions``.

    The perturbation rescales and shifts log p (``1.5 log p + 0.3``): it changes the
    policy-gradient term's gradient and the KL term's value and gradient wherever
    it is not masked. (TRL scores tokens with a fused LM head, so logits are never
    materialised; the log-probabilities are where the perturbation can act.)
    """
    model = trainer.model
    model.zero_grad()
    original = type(trainer)._get_per_token_logps_and_entropies

    def perturbed(self, *args, **kwargs):
        logps, *rest = original(self, *args, **kwargs)
        return (torch.where(positions, 1.5 * logps + 0.3, logps), *rest)

    if positions is not None:
        trainer._get_per_token_logps_and_entropies = perturbed.__get__(trainer)
    try:
        loss = trainer.compute_loss(model, inputs)
        loss.backward()
    finally:
        trainer.__dict__.pop("_get_per_token_logps_and_entropies", None)
    return loss.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]


def test_loss_and_gradient_ignore_retrieved_positions_but_not_model_positions(trainer_and_inputs):
    trainer, inputs, _ = trainer_and_inputs
    tool = inputs["tool_mask"].bool() & inputs["completion_mask"].bool()
    retrieved = ~inputs["tool_mask"].bool() & inputs["completion_mask"].bool()
    assert retrieved.any(), "the rollouts must contain retrieved tokens"
    assert trainer.beta > 0  # the KL term is in the loss too

    loss, grads = loss_and_grads(trainer, inputs, None)
    loss_r, grads_r = loss_and_grads(trainer, inputs, retrieved)
    loss_m, grads_m = loss_and_grads(trainer, inputs, tool)

    assert any(g.abs().sum() > 0 for g in grads)
    assert torch.equal(loss, loss_r)
    assert all(torch.equal(a, b) for a, b in zip(grads, grads_r, strict=True))
    scale = max(g.abs().max() for g in grads)
    assert max((a - b).abs().max() for a, b in zip(grads, grads_m, strict=True)) > 1e-3 * scale
    assert not torch.equal(loss, loss_m)  # through the KL term


def test_the_env_mask_is_the_loops_mask_and_the_reward_is_read_from_the_text(trainer_and_inputs):
    trainer, inputs, rollout = trainer_and_inputs
    for i, (ids, mask) in enumerate(zip(rollout["completion_ids"], rollout["env_mask"], strict=True)):
        assert inputs["tool_mask"][i, : len(ids)].tolist() == mask  # the loop's mask, as the loop made it
        assert inputs["completion_ids"][i, : len(ids)].tolist() == ids
        assert rollout["searches"][i] and " <result>\n" in rollout["responses"][i]
    # As the reference's reward manager does: decode prompt + response ids with special tokens.
    tok = trainer.processing_class
    texts = [tok.decode(p + c) for p, c in zip(rollout["prompt_ids"], rollout["completion_ids"], strict=True)]
    expected = [reward(response_text(t, ""), [SCRIPT_ANSWER], eos_token=tok.eos_token) for t in texts]
    assert expected == [1.0, 1.0]  # answered Marxville from the retrieved passage
    assert trainer._metrics["train"]["reward"][-1] == 1.0  # what TRL's reward step computed
