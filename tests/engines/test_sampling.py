"""How each engine applies OpenAI's penalties and logit bias (the contract tests run them end to end)."""

from __future__ import annotations

import torch

from research.engines import SamplingOptions
from research.engines.hf import _sample
from research.engines.vllm_engine import sampling_params


def test_the_transformers_engine_biases_then_penalises_the_generated_tokens():
    logits = torch.tensor([5.0, 4.0, 3.0, 2.0])
    greedy = SamplingOptions(temperature=0.0)
    assert _sample(logits, greedy, None, [], []) == 0
    # token 0 generated twice: 5 - 0.5 - 2 * 1.0 = 2.5 < 4.0; token 1 once: 4 - 0.5 - 1.0 = 2.5 < 3.0
    penalised = SamplingOptions(temperature=0.0, presence_penalty=0.5, frequency_penalty=1.0)
    assert _sample(logits, penalised, None, [], [0, 0, 1]) == 2
    assert _sample(logits, penalised, None, [0, 0, 1, 1], []) == 0  # the prompt's tokens (seen) do not count
    assert _sample(logits, SamplingOptions(temperature=0.0, logit_bias={3: 3.5}), None, [], []) == 3
    assert _sample(logits, SamplingOptions(temperature=0.0, logit_bias={0: -100.0}), None, [], []) == 1


def test_the_vllm_engine_hands_them_to_vllm():
    sampling = SamplingOptions(presence_penalty=0.5, frequency_penalty=-0.25, logit_bias={7: 2.0})
    params = sampling_params(16, [], [2], sampling)
    assert (params.presence_penalty, params.frequency_penalty, params.logit_bias) == (0.5, -0.25, {7: 2.0})
    assert sampling_params(16, [], [2], SamplingOptions()).logit_bias is None
