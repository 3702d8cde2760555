"""Unmodified third-party clients against a live server on the toy ReSearch model.

The ``openai`` SDK (chat, its ``chat.completions.stream()`` accumulator, the Responses
API and its ``responses.stream()``, ``models.retrieve``, the append-the-reply chat loop),
``langchain-openai``'s ``ChatOpenAI`` (chat completions and the Responses API) and the
``openai-agents`` Runner with its default (Responses) model, each asking held-out toy-world
questions and finding the searches in its own objects. What the toy model answers to a
question it never saw depends on the CPU that trained it, so the tests compare each client
with the server's own answer and check that the searches behind it are visible.
"""

from __future__ import annotations

import openai
import pytest
import pytest_asyncio

from research.protocol import render_base_conversation
from research.testbed.acceptance import held_out
from tests.conftest import serving

MODEL = "research"


@pytest_asyncio.fixture(scope="module")
async def toy_url(toy_transformers_engine, toy_index, toy_recipe):
    config = {"model_name": MODEL, "template": "base", "search_top_k": toy_recipe.top_k}
    async with serving(toy_transformers_engine, toy_index, **config) as live:
        yield live.url


@pytest.fixture(scope="module")
def questions(toy_world) -> list[str]:
    return [q.question for q in held_out(toy_world, 3)]


@pytest_asyncio.fixture
async def client(toy_url):
    client = openai.AsyncOpenAI(base_url=toy_url, api_key="unused")
    yield client
    await client.close()


async def chat(client, question: str) -> dict:
    """The server's own non-streaming chat reply, as a dict."""
    reply = await client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": question}], temperature=0
    )
    return reply.choices[0].message.model_dump()


async def test_the_sdks_stream_accumulator_rebuilds_every_search(client, questions):
    for question in questions:
        whole = await chat(client, question)
        async with client.chat.completions.stream(
            model=MODEL, messages=[{"role": "user", "content": question}], temperature=0
        ) as stream:
            async for _ in stream:
                pass
            final = await stream.get_final_completion()
        message = final.choices[0].message.model_dump()
        assert message["searches"] == whole["searches"] and len(whole["searches"]) >= 1
        assert [s["index"] for s in message["searches"]] == list(range(len(whole["searches"])))
        assert message["content"] == whole["content"] and message["answer"] == whole["answer"]
        assert message["reasoning"] == whole["reasoning"]


async def test_responses_create_and_stream_show_reasoning_searches_and_the_cited_answer(client, questions):
    for question in questions:
        whole = await chat(client, question)
        created = await client.responses.create(model=MODEL, input=question, temperature=0)
        async with client.responses.stream(model=MODEL, input=question, temperature=0) as stream:
            kinds = [event.type async for event in stream]
            streamed = await stream.get_final_response()
        assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == "response.completed"
        for response in (created, streamed):
            assert response.status == "completed"
            searches = [item for item in response.output if item.type == "file_search_call"]
            assert [s.queries[0] for s in searches] == [s["query"] for s in whole["searches"]]
            assert all(s.status == "completed" and s.results for s in searches)
            assert searches[0].results[0].filename == whole["searches"][0]["results"][0]["title"]
            assert response.output[0].type == "reasoning" and "<think>" in response.output[0].summary[0].text
            assert response.output[-1].type == "message"
            assert response.output_text == whole["content"]
            assert whole["answer"] and whole["answer"] in response.output_text
            cited = [a.filename for a in response.output[-1].content[0].annotations]
            assert cited == [c["title"] for c in whole["citations"]]
            assert response.usage.model_dump()["searches"] == len(whole["searches"])
            assert response.model_extra["answer"] == whole["answer"]
        assert [i.type for i in created.output] == [i.type for i in streamed.output]


async def test_models_retrieve_and_an_unknown_model(client):
    assert (await client.models.retrieve(MODEL)).id == MODEL
    with pytest.raises(openai.NotFoundError):
        await client.models.retrieve("gpt-4o")


async def test_a_three_turn_conversation_appending_each_reply(client, questions, toy_model_path):
    """The loop everyone writes: append the SDK's reply object, ask the next question. The base model sees every
    turn in its template's words (what it answers to turns it never trained on is not asserted)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(toy_model_path)
    messages: list = []
    for question in questions:
        messages.append({"role": "user", "content": question})
        reply = await client.chat.completions.create(model=MODEL, messages=messages, temperature=0, max_tokens=256)
        message = reply.choices[0].message
        turns = [(m["role"], m["content"]) if isinstance(m, dict) else (m.role, m.content or "") for m in messages]
        rendered = tokenizer.encode(render_base_conversation(turns), add_special_tokens=False)
        assert reply.usage.prompt_tokens == len(rendered)  # every earlier turn is in the prompt
        messages.append(message)  # answer, reasoning, searches, citations, refusal=None travel back
    assert len(messages) == 6


async def test_langchain_chat_openai_on_chat_completions_and_on_the_responses_api(toy_url, client, questions):
    from langchain_openai import ChatOpenAI

    question = questions[0]
    whole = await chat(client, question)
    plain = ChatOpenAI(base_url=toy_url, api_key="unused", model=MODEL, temperature=0)
    message = await plain.ainvoke(question)
    assert message.content == whole["content"]
    assert message.response_metadata["token_usage"]["searches"] == len(whole["searches"])  # our usage extension

    responses = ChatOpenAI(base_url=toy_url, api_key="unused", model=MODEL, temperature=0, use_responses_api=True)
    message = await responses.ainvoke(question)
    blocks = message.content
    assert [b["type"] for b in blocks if b["type"] == "file_search_call"] == ["file_search_call"] * len(
        whole["searches"]
    )
    searched = [b["queries"][0] for b in blocks if b["type"] == "file_search_call"]
    assert searched == [s["query"] for s in whole["searches"]]
    assert any(b["type"] == "reasoning" for b in blocks)
    assert message.text == whole["content"]


async def test_the_agents_sdk_runner_with_its_default_responses_model(toy_url, client, questions):
    from agents import Agent, ModelSettings, Runner, set_default_openai_client, set_tracing_disabled

    set_tracing_disabled(True)  # tracing would export to api.openai.com
    set_default_openai_client(client, use_for_tracing=False)
    agent = Agent(name="researcher", model=MODEL, model_settings=ModelSettings(temperature=0))
    question = questions[0]
    whole = await chat(client, question)
    result = await Runner.run(agent, question)
    assert result.final_output == whole["content"] and whole["answer"] in result.final_output
    [raw] = result.raw_responses
    searches = [item for item in raw.output if item.type == "file_search_call"]
    assert [s.queries[0] for s in searches] == [s["query"] for s in whole["searches"]]
    assert {type(item).__name__ for item in result.new_items} >= {"ReasoningItem", "MessageOutputItem"}
