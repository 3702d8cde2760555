"""The canned model answers every prompt with its reply, by construction, even sampled."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from research.protocol.answer import extract_answer
from research.protocol.templates import render_prompt
from research.testbed.canned import AFTER, ANSWER, BEFORE, canned_model, successors
from research.testbed.toy_model import ToyRecipe, train_tokenizer


@pytest.fixture(scope="module")
def canned():
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    path = canned_model()
    return AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)


def generate(canned, ids: list[int]) -> str:
    import torch

    model, tokenizer = canned
    out = model.generate(torch.tensor([ids]), max_new_tokens=40, do_sample=True, temperature=1.0, top_k=0)
    return tokenizer.decode(out[0, len(ids) :])


@settings(max_examples=25, deadline=None)
@given(question=st.text(max_size=200))
def test_any_prompt_gets_the_reply_and_a_result_block_gets_the_answer(canned, question: str) -> None:
    _, tokenizer = canned
    prompt = tokenizer.encode(render_prompt(question, "base"))
    assert generate(canned, prompt) == BEFORE + AFTER + "<|endoftext|>"
    after_result = prompt + tokenizer.encode(BEFORE + f" <result>\n{question}\n</result>")
    assert generate(canned, after_result) == AFTER + "<|endoftext|>"
    assert extract_answer(BEFORE + AFTER) == ANSWER


def test_a_reply_that_repeats_a_token_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from research.testbed import canned

    monkeypatch.setattr(canned, "BEFORE", " <think> I need to need. </think> <search> city </search>")
    with pytest.raises(ValueError, match="repeats a token"):
        successors(train_tokenizer(ToyRecipe()))
