"""One GRPO step in Search-R1's and ReCall's dialects: TRL's real trainer on scripted models of each protocol.

The rollouts are the shared loop's in the protocol, the env mask its mask (the protocol's inserted
replies at 0), the reward the protocol's, and the checkpoint's card names the protocol.
"""

from __future__ import annotations

import json

import pytest

from research.protocol import get_protocol
from research.train.config import TrainConfig
from research.train.trainer import build_trainer
from tests.support.rollouts import record_rollouts
from tests.support.scripted import SCRIPT_ANSWER, SCRIPTS, TOOL_CALL, scripted_model
from tests.support.training import values_in

REPLY_ENDS = {
    "search-r1": ("\n\n<information>Doc 1(Title: ", "</information>\n\n"),
    "recall": (f"\n<|im_start|>user\n<tool_response>{TOOL_CALL}\nresult: \n", "<|im_start|>assistant\n<think>"),
}


@pytest.mark.parametrize("protocol", ["search-r1", "recall"])
def test_a_grpo_step_in_each_protocol(tmp_path, script_index, protocol):
    values = values_in(tmp_path, scripted_model(protocol=protocol), script_index)
    values.update(protocol=protocol, search_top_k=None, max_prompt_tokens=1024, max_completion_length=512, max_steps=1)
    trainer, rollouts = build_trainer(TrainConfig(**values))
    recorded = record_rollouts(trainer)
    try:
        trainer.train()
    finally:
        rollouts.close()
    dialect, tok = get_protocol(protocol), trainer.processing_class
    before, after = SCRIPTS[protocol]
    turn_end = tok.eos_token if dialect.eos_in_text else ""
    rollout = recorded[0]
    for ids, mask, response in zip(rollout["completion_ids"], rollout["env_mask"], rollout["responses"], strict=True):
        reply = tok.decode([t for t, m in zip(ids, mask, strict=True) if m == 0])
        start, end = REPLY_ENDS[protocol]
        assert reply.startswith(start) and reply.endswith(end)
        assert response == before + turn_end + reply + after + (tok.eos_token if dialect.eos_in_text else "")
        assert dialect.reward(response, [SCRIPT_ANSWER], eos_token=tok.eos_token) == 1.0
    assert rollout["protocol"] == [protocol] * len(rollout["responses"])
    logged = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert logged["searches"] == 1 and logged["well_formed"] == 1 and logged["reward"] > 0
    card = json.loads((tmp_path / "run" / "checkpoint-1" / "research.json").read_text())
    assert card == {"template": "instruct", "protocol": protocol}
