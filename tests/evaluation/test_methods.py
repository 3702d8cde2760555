"""Every method on a real engine and a real LanceDB index, through the shared code."""

from __future__ import annotations

from dataclasses import replace

import pytest

from research.evaluation.methods import (
    IRCOT_MAX_STEPS,
    ITER_RETGEN_ROUNDS,
    METHODS,
    Setup,
    prompt_ids,
    reference,
)
from research.protocol import extract_answer
from research.questions import Example
from tests.support.scripted import SCRIPT_ANSWER, SCRIPT_QUERY, SCRIPT_QUESTION

QUESTION = Example("q1", SCRIPT_QUESTION, (SCRIPT_ANSWER,))


@pytest.fixture
def setup(transformers_engine, retriever) -> Setup:
    return Setup(transformers_engine, retriever, template="instruct", max_tokens=512)


async def test_research_runs_the_shared_search_loop_and_answers_from_the_result(setup):
    pred = await METHODS["research"](setup, QUESTION)
    assert pred.answer == SCRIPT_ANSWER
    assert pred.queries == [SCRIPT_QUERY]
    assert pred.well_formed is True
    assert " <result>\n" in pred.response
    assert 0 < pred.response_tokens < len(setup.engine.tokenizer.encode(pred.response))  # results not counted


async def test_a_response_cut_off_by_its_budget_predicts_nothing_as_in_the_reference(setup):
    whole = await METHODS["research"](setup, QUESTION)
    budget = len(setup.engine.tokenizer.encode(whole.response))  # everything but the end-of-sequence token
    cut = await METHODS["research"](replace(setup, max_tokens=budget), QUESTION)
    assert extract_answer(cut.response) == SCRIPT_ANSWER  # the box was written...
    assert cut.cut_off and cut.answer == ""  # ...but the response ended on its budget (`length`)
    assert not whole.cut_off


async def test_naive_generation_retrieves_nothing(setup):
    pred = await METHODS["naive-generation"](setup, QUESTION)
    assert pred.queries == []
    assert pred.response_tokens > 0


async def test_naive_rag_retrieves_once_with_the_question(setup):
    pred = await METHODS["naive-rag"](setup, QUESTION)
    assert pred.queries == [SCRIPT_QUESTION]


async def test_iter_retgen_retrieves_with_the_question_and_the_previous_answer(setup):
    pred = await METHODS["iter-retgen"](setup, QUESTION)
    assert len(pred.queries) == ITER_RETGEN_ROUNDS
    assert pred.queries[0] == SCRIPT_QUESTION
    assert all(q.startswith(SCRIPT_QUESTION) for q in pred.queries)


async def test_ircot_interleaves_at_most_five_steps(setup):
    pred = await METHODS["ircot"](setup, QUESTION)
    assert pred.queries[0] == SCRIPT_QUESTION
    assert 1 <= len(pred.queries) <= IRCOT_MAX_STEPS


def test_baseline_prompts_use_the_chat_template_for_instruct_and_one_string_for_base(setup, tokenizer):
    passages = ['"Freedonia"\nIts capital is Marxville.']
    assert reference(passages) == "Doc 1(Title: Freedonia) Its capital is Marxville."
    chat = tokenizer.decode(prompt_ids(setup, "SYS", "Question: q"))
    assert chat.startswith("<|im_start|>system\nSYS<|im_end|>") and chat.endswith("<|im_start|>assistant\n")
    base = Setup(setup.engine, setup.retriever, template="base")
    assert tokenizer.decode(prompt_ids(base, "SYS", "Question: q")) == "SYS\n\nQuestion: q\nAnswer:"
