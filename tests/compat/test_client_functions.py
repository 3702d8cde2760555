"""Unmodified third-party agents calling their own function beside the server's search, on the ReCall toy.

The three-protocol toy (:mod:`research.testbed.dialects`) in ReCall's dialect answers a held-out
"Who runs the company that makes P?" by searching (the server runs it), then calling the
client's ``ceo_of`` with the company it read, then answering from its result.
``langchain-openai``'s ``bind_tools`` with a tool loop, and the ``openai-agents`` Runner with a
``@function_tool`` (on its chat completions model and on its Responses one), each run the
function themselves and get the answer. The toy writes its arguments with a leading space
(``" Modrom Company"``: see the toy's docstring); the function strips it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import openai
import pytest
import pytest_asyncio

from research.protocol import exact_match
from research.protocol.answer import last_boxed
from research.testbed.dialects import client_result
from research.testbed.world import Question, client_questions
from tests.conftest import MODEL, serving


@pytest_asyncio.fixture(scope="module")
async def url(toy_dialects_engine, toy_index) -> AsyncIterator[str]:
    async with serving(toy_dialects_engine, toy_index, template="base", protocol="recall", search_top_k=1) as live:
        yield live.url


@pytest.fixture(scope="module")
def questions(toy_world) -> list[Question]:
    """Held-out questions that need the client's function: their answers are in no passage."""
    return client_questions(toy_world, "test")[:4]


def answered(text: str, q: Question) -> bool:
    return exact_match(last_boxed(text) or "", q.answer)


def calls(message) -> list[tuple[str, dict]]:
    return [(call["name"], call["args"]) for call in message.tool_calls]


ENOUGH = 2
"""Round trips of 4 that must get the right answer: the toy gets 0.935 of 200 (README), and its
weights differ by machine, so which questions it gets right is not asserted."""


async def test_langchain_bind_tools_and_a_tool_loop(url, questions):
    from langchain_core.messages import HumanMessage
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI

    asked = []

    @tool
    def ceo_of(company: str) -> str:
        """Look up who runs a company."""
        asked.append(company.strip())
        return client_result(company)

    model = ChatOpenAI(base_url=url, api_key="unused", model=MODEL, temperature=0).bind_tools([ceo_of])

    async def round_trip(q: Question) -> bool:
        asked.clear()
        messages = [HumanMessage(q.question)]
        reply = await model.ainvoke(messages)
        while reply.tool_calls and len(messages) < 8:
            messages += [reply, *[await ceo_of.ainvoke(call) for call in reply.tool_calls]]
            reply = await model.ainvoke(messages)
        first = messages[1] if len(messages) > 1 else reply
        searched = first.response_metadata["token_usage"]["searches"] == 1  # the server's own, same answer
        streamed = None
        async for chunk in model.astream(messages[:1]):  # the first turn again, streamed: the call arrives whole
            streamed = chunk if streamed is None else streamed + chunk
        assert calls(streamed) == calls(first)
        return asked == [q.queries[-1]] and searched and answered(reply.content, q)

    right = [await round_trip(q) for q in questions]
    assert sum(right) >= ENOUGH, right


@pytest.mark.parametrize("api", ["chat_completions", "responses"])
async def test_the_agents_sdk_runs_a_function_tool(url, api, questions):
    """On the Agents SDK's chat completions model, and on its default one (the Responses API)."""
    from agents import (
        Agent,
        ModelSettings,
        OpenAIChatCompletionsModel,
        OpenAIResponsesModel,
        Runner,
        function_tool,
        set_tracing_disabled,
    )

    set_tracing_disabled(True)  # tracing would export to api.openai.com
    asked = []

    @function_tool
    def ceo_of(company: str) -> str:
        """Look up who runs a company."""
        asked.append(company.strip())
        return client_result(company)

    client = openai.AsyncOpenAI(base_url=url, api_key="unused")
    kind = OpenAIChatCompletionsModel if api == "chat_completions" else OpenAIResponsesModel
    agent = Agent(name="researcher", model=kind(MODEL, client), model_settings=ModelSettings(temperature=0),
                  tools=[ceo_of])  # fmt: skip

    async def round_trip(q: Question) -> bool:
        asked.clear()
        result = await Runner.run(agent, q.question)
        # the turn that called the function (with the server's own search), then the answer's
        searched = api == "chat_completions" or [
            item.type for item in result.raw_responses[0].output if item.type == "file_search_call"
        ] == ["file_search_call"]
        return (
            asked == [q.queries[-1]]
            and len(result.raw_responses) == 2
            and searched
            and (answered(result.final_output, q))
        )

    right = [await round_trip(q) for q in questions]
    await client.close()
    assert sum(right) >= ENOUGH, right
