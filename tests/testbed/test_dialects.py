"""The three-protocol toy's training data: each protocol's own code reads its traces as the oracle meant them."""

from __future__ import annotations

import pytest

from research.protocol import exact_match, get_protocol
from research.protocol.recall import SEARCH_SCHEMA
from research.testbed.dialects import (
    CEO_CALL,
    CEO_TOOL,
    SEARCH_CALL,
    client_result,
    extend_tokenizer,
    model_turns,
    trace,
)
from research.testbed.toy_model import ToyRecipe, index_world, train_tokenizer
from research.testbed.world import ceo_of, client_questions, make_world


@pytest.fixture(scope="module")
def small(tmp_path_factory, embedder):
    recipe = ToyRecipe(chains=10)
    world = make_world(recipe.seed, chains=recipe.chains)
    tokenizer = extend_tokenizer(train_tokenizer(recipe))
    index = index_world(world, "train", tmp_path_factory.mktemp("dialects") / "idx", embedder=embedder)
    questions = [q for q in world.questions("train") if q.type != "comparison"]
    queries = sorted({query for q in questions + client_questions(world, "train") for query in q.queries})
    found = dict(zip(queries, index.search(queries, k=1), strict=True))
    return world, tokenizer, questions, found


@pytest.mark.parametrize("name", ["research", "search-r1", "recall"])
def test_each_protocol_reads_the_oracle_trace_as_a_right_answer(small, name):
    _, tokenizer, questions, found = small
    protocol = get_protocol(name)
    for q in questions:
        ids, labels = trace(q, protocol, tokenizer, found, None)
        prompt = protocol.render_prompt(q.question, "base")
        response = tokenizer.decode(ids)[len(prompt) :]
        taught = tokenizer.decode([t for t, label in zip(ids, labels, strict=True) if label != -100])
        assert taught == "".join(model_turns(q, name))  # only the model's turns carry loss
        assert exact_match(protocol.extract_answer(response) or "", q.answer)
        assert protocol.well_formed(response)
        assert protocol.reward(response, q.answer, eos_token="<|im_end|>") == 1.0
        for query in q.queries:  # each search showed the passage it asked for
            assert protocol.format_result(found[query]).strip() in response


def test_recall_traces_call_the_clients_tool_and_read_its_answer(small):
    world, tokenizer, _, found = small
    recall = get_protocol("recall")
    tools = [SEARCH_SCHEMA, CEO_TOOL]
    triggers = tokenizer.convert_tokens_to_ids([SEARCH_CALL, CEO_CALL])
    for q in client_questions(world, "train"):
        company = q.queries[-1]
        ids, labels = trace(q, recall, tokenizer, found, tools)
        response = tokenizer.decode(ids)[len(recall.render_prompt(q.question, "base", tools=tools)) :]
        (call,) = recall.next_step(model_turns(q, "recall")[1], "eos").calls
        assert call.name == "ceo_of" and client_result(**call.arguments) == f"{company} is run by {ceo_of(company)}."
        assert f"<tool_response>{call.text}\n{client_result(company)}\n</tool_response>" in response
        assert recall.reward(response, q.answer, eos_token="<|im_end|>") == 1.0
        # each name the model writes follows a trigger token: the pointer head starts the copy
        taught = [t for t, label in zip(ids, labels, strict=True) if label != -100]
        assert [t for t in taught if t in triggers] == triggers


def test_client_questions_are_only_for_a_protocol_with_tools():
    world = make_world(0, chains=10)
    q = client_questions(world, "test")[0]
    with pytest.raises(ValueError, match="cannot call a client's tool"):
        model_turns(q, "search-r1")
