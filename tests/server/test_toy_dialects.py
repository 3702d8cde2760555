"""End to end on the three-protocol toy: held-out 2-hop questions through research-serve in each protocol.

The toy (:mod:`research.testbed.dialects`) never saw these entities; their passages exist only
in the index the server searches. ``python -m research.testbed.acceptance --protocol all``
measures it on 200 questions per protocol (README); the bounds here are looser. In ReCall's
dialect it also calls a function of the client's (``ceo_of``) after the server's search: the
``openai`` SDK runs that round trip here, LangChain and the Agents SDK in
``tests/compat/test_client_functions.py``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import openai
import pytest
import pytest_asyncio

from research.protocol import PROTOCOL_NAMES, exact_match
from research.protocol.answer import last_boxed
from research.testbed.acceptance import held_out
from research.testbed.dialects import CEO_TOOL, client_result
from research.testbed.world import client_questions
from tests.conftest import Live, serving

MODEL = "toy"


@pytest_asyncio.fixture(scope="module", params=PROTOCOL_NAMES)
async def live(request: pytest.FixtureRequest, toy_dialects_engine, toy_index) -> AsyncIterator[Live]:
    async with serving(toy_dialects_engine, toy_index, model_name=MODEL, template="base", protocol=request.param,
                       search_top_k=1) as live:  # fmt: skip
        yield live


def client(live: Live) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=live.url, api_key="none", max_retries=0)


def answer_in(text: str) -> str:
    """The answer in a reply's text: ReCall's is boxed, the others' is the whole content."""
    box = last_boxed(text)
    return box if box is not None else text


async def test_held_out_questions_through_chat_completions_and_responses(live, toy_world):
    protocol = live.server.protocol
    api = client(live)
    right = {"chat": 0, "completions": 0, "responses": 0}
    questions = held_out(toy_world, 5)
    for q in questions:
        chat = await api.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": q.question}], temperature=0
        )
        message = chat.choices[0].message
        assert chat.usage.model_extra["searches"] == len(message.model_extra["searches"]) >= 1
        right["chat"] += exact_match(message.model_extra["answer"] or "", q.answer)
        completion = await api.completions.create(
            model=MODEL, prompt=protocol.render_prompt(q.question, "base"), temperature=0, max_tokens=1024
        )
        right["completions"] += exact_match(completion.choices[0].model_extra["answer"] or "", q.answer)
        response = await api.responses.create(model=MODEL, input=q.question, temperature=0)
        right["responses"] += exact_match(answer_in(response.output_text), q.answer)
    # measured on 200 held-out questions per protocol: README, "The offline test bed"
    assert all(n >= len(questions) - 1 for n in right.values()), right
    await api.close()


@pytest.mark.parametrize("live", ["recall"], indirect=True)
async def test_recall_toy_calls_the_clients_function_after_the_servers_search(live, toy_world):
    api = client(live)
    right = 0
    questions = client_questions(toy_world, "test")[:3]
    for q in questions:
        messages = [{"role": "user", "content": q.question}]
        asked = await api.chat.completions.create(model=MODEL, messages=messages, tools=[CEO_TOOL], temperature=0)
        assert asked.choices[0].finish_reason == "tool_calls"
        assert asked.usage.model_extra["searches"] == 1  # the server's own search, in the same answer
        (call,) = asked.choices[0].message.tool_calls
        assert call.function.name == "ceo_of"
        result = client_result(**json.loads(call.function.arguments))
        messages += [asked.choices[0].message.model_dump(exclude_none=True),
                     {"role": "tool", "tool_call_id": call.id, "content": result}]  # fmt: skip
        done = await api.chat.completions.create(model=MODEL, messages=messages, tools=[CEO_TOOL], temperature=0)
        assert done.choices[0].finish_reason == "stop"
        right += exact_match(answer_in(done.choices[0].message.content), q.answer)
    assert right >= len(questions) - 1
    await api.close()


@pytest.mark.parametrize("live", ["recall"], indirect=True)
async def test_recall_toy_round_trip_on_the_responses_api(live, toy_world):
    api = client(live)
    q = client_questions(toy_world, "test")[0]
    tool = {"type": "function", **CEO_TOOL["function"]}
    first = await api.responses.create(model=MODEL, input=q.question, tools=[tool], temperature=0)
    (call,) = [item for item in first.output if item.type == "function_call"]
    assert call.name == "ceo_of"
    result = client_result(**json.loads(call.arguments))
    output = {"type": "function_call_output", "call_id": call.call_id, "output": result}
    follow = [{"role": "user", "content": q.question}, *[item.model_dump() for item in first.output], output]
    done = await api.responses.create(model=MODEL, input=follow, tools=[tool], temperature=0)
    assert exact_match(answer_in(done.output_text), q.answer)
    await api.close()
