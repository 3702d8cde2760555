"""The prompt templates are byte-exact copies of the released checkpoints' (design.md §3)."""

from __future__ import annotations

import pytest

from research.protocol import BASE_TEMPLATE, INSTRUCT_SYSTEM, eos_token_ids, render_prompt
from research.testbed.models import load_tokenizer

# Spelled out independently of the module under test: a typo in either one fails here.
EXPECTED_BASE = (
    r"A conversation between User and Assistant. The user asks a question, and the assistant solves it. The "
    r"assistant first thinks about the reasoning process in the mind and then provides the user with the answer. "
    r"During thinking, the assistant can invoke the wikipedia search tool to search for fact information about "
    r"specific topics if needed. The reasoning process and answer are enclosed within <think> </think> and "
    r"<answer> </answer> tags respectively, and the search query and result are enclosed within <search> "
    r"</search> and <result> </result> tags respectively. For example, <think> This is the reasoning process. "
    r"</think> <search> search query here </search> <result> search result here </result> <think> This is the "
    r"reasoning process. </think> <answer> The final answer is \[ \boxed{answer here} \] </answer>. In the last "
    r"part of the answer, the final exact answer is enclosed within \boxed{} with latex format. User: {question}. "
    r"Assistant:"
)
EXPECTED_SYSTEM = (
    r"You are a helpful assistant that can solve the given question step by step with the help of the wikipedia "
    r"search tool. Given a question, you need to first think about the reasoning process in the mind and then "
    r"provide the answer. During thinking, you can invoke the wikipedia search tool to search for fact "
    r"information about specific topics if needed. The reasoning process and answer are enclosed within <think> "
    r"</think> and <answer> </answer> tags respectively, and the search query and result are enclosed within "
    r"<search> </search> and <result> </result> tags respectively. For example, <think> This is the reasoning "
    r"process. </think> <search> search query here </search> <result> search result here </result> <think> This "
    r"is the reasoning process. </think> <answer> The final answer is \[ \boxed{answer here} \] </answer>. In the "
    r"last part of the answer, the final exact answer is enclosed within \boxed{} with latex format."
)


@pytest.fixture(scope="module")
def qwen():
    return load_tokenizer()


def test_base_template_is_verbatim():
    assert BASE_TEMPLATE == EXPECTED_BASE


def test_instruct_system_message_is_verbatim():
    assert INSTRUCT_SYSTEM == EXPECTED_SYSTEM


def test_base_prompt_substitutes_only_the_question_and_keeps_latex_braces():
    prompt = render_prompt("Who founded {Acme}?", "base")
    assert prompt == EXPECTED_BASE.replace("{question}", "Who founded {Acme}?")
    assert r"\boxed{answer here}" in prompt


def test_instruct_prompt_is_the_qwen_chat_template_with_our_system_turn(qwen):
    prompt = render_prompt("Who wrote Hamlet?", "instruct", qwen)
    assert prompt == (
        f"<|im_start|>system\n{EXPECTED_SYSTEM}<|im_end|>\n"
        "<|im_start|>user\nWho wrote Hamlet?<|im_end|>\n<|im_start|>assistant\n"
    )


def test_instruct_prompt_needs_a_tokenizer():
    with pytest.raises(ValueError, match="tokenizer"):
        render_prompt("q", "instruct")


def test_unknown_template_is_a_clear_error():
    with pytest.raises(ValueError, match="base, instruct"):
        render_prompt("q", "chatml")  # type: ignore[arg-type]


def test_both_qwen_end_tokens_end_a_response(qwen):
    assert eos_token_ids(qwen) == [151645, 151643]


def test_an_end_token_with_id_zero_is_kept_and_unknown_ones_are_dropped():
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    vocab = {"<|endoftext|>": 0, "<|im_start|>": 1, "a": 2}
    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel(vocab, unk_token="<|endoftext|>")))
    assert eos_token_ids(tok) == [0]  # '<|im_end|>' is unknown here: it maps to id 0 but is not that token
