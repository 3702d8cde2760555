"""The hand-initialised copy circuit works before any training, in a plain Qwen2."""

from __future__ import annotations

import random

import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from research.testbed.circuit import wire_copy_circuit, wire_pointer_head


def tiny_qwen2(**overrides) -> Qwen2ForCausalLM:
    torch.manual_seed(0)
    config = {
        "vocab_size": 1024,
        "hidden_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 2,
        "intermediate_size": 256,
        "rope_theta": 1e6,
        "tie_word_embeddings": True,
        "attn_implementation": "eager",
        **overrides,
    }
    return Qwen2ForCausalLM(Qwen2Config(**config))


def copy_accuracy(model: Qwen2ForCausalLM, vocab: int = 150) -> tuple[float, torch.Tensor]:
    """Next-token accuracy on the second copy of a random segment, after up to 300 other tokens.

    A small vocabulary makes pieces recur, so matching on one token is ambiguous.
    """
    rng = random.Random(0)
    hits = total = 0
    for _ in range(10):
        segment = [rng.randrange(vocab) for _ in range(rng.randint(20, 60))]
        ids = segment + [rng.randrange(vocab) for _ in range(rng.randint(0, 300))] + segment
        with torch.no_grad():
            out = model(input_ids=torch.tensor([ids]), output_attentions=True)
        predicted = out.logits[0].argmax(-1).tolist()
        for p in range(len(ids) - len(segment) + 1, len(ids) - 1):
            hits += predicted[p] == ids[p + 1]
            total += 1
    return hits / total, out.attentions[0][0]


def test_look_back_heads_attend_one_and_two_tokens_back_and_the_induction_head_copies():
    model = tiny_qwen2()
    wire_copy_circuit(model)
    accuracy, layer0 = copy_accuracy(model)
    n = layer0.shape[-1]
    assert layer0[0, torch.arange(1, n), torch.arange(n - 1)].min() > 0.99
    assert layer0[1, torch.arange(2, n), torch.arange(n - 2)].min() > 0.99
    assert accuracy > 0.95


def test_matching_two_tokens_resolves_pieces_that_recur():
    one_token = tiny_qwen2()
    wire_copy_circuit(one_token, bigram=0.0)
    two_tokens = tiny_qwen2()
    wire_copy_circuit(two_tokens)
    assert copy_accuracy(two_tokens)[0] > copy_accuracy(one_token)[0] + 0.2


def test_shapes_without_room_for_the_circuit_are_refused():
    with pytest.raises(ValueError, match="kv_heads == heads"):
        wire_copy_circuit(tiny_qwen2(num_key_value_heads=1))
    with pytest.raises(ValueError, match="tie_word_embeddings"):
        wire_copy_circuit(tiny_qwen2(tie_word_embeddings=False))
    with pytest.raises(ValueError, match="head_dim >= 64"):
        wire_copy_circuit(tiny_qwen2(num_attention_heads=4, num_key_value_heads=4))


def test_the_pointer_head_copies_the_first_piece_of_the_name_named_last():
    """Tokens 0-99 are words, 100-199 name starts, 200-299 continuations, 300 the trigger."""
    model = tiny_qwen2(hidden_size=192, num_attention_heads=3, num_key_value_heads=3)
    wire_copy_circuit(model)
    starts, pieces, trigger = range(100, 200), range(200, 300), 300
    wire_pointer_head(model, triggers=[trigger], name_starts=starts, continuations=[*starts, *pieces])
    rng = random.Random(0)
    hits = 0
    for _ in range(50):
        ids, last = [], None
        for _ in range(rng.randint(3, 8)):  # words, then a two-word name: "Mara Quessel"
            ids += [rng.randrange(100) for _ in range(rng.randint(3, 30))]
            last = rng.choice(starts)
            ids += [last, rng.choice(pieces), rng.choice(starts), rng.choice(pieces)]
        ids += [rng.randrange(100) for _ in range(rng.randint(1, 12))] + [trigger]
        with torch.no_grad():
            hits += model(input_ids=torch.tensor([ids])).logits[0, -1].argmax().item() == last
    assert hits >= 45


def test_the_pointer_head_needs_a_third_head():
    with pytest.raises(ValueError, match="heads >= 3"):
        wire_pointer_head(tiny_qwen2(), triggers=[1], name_starts=[2], continuations=[3])
