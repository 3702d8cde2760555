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
def question(toy_world) -> Question:
    """A held-out question that needs the client's function: its answer is in no passage."""
    return client_questions(toy_world, "test")[0]


def answered(text: str, q: Question) -> bool:
    return exact_match(last_boxed(text) or "", q.answer)


async def test_langchain_bind_tools_and_a_tool_loop(url, question):
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
    messages = [HumanMessage(question.question)]
    reply = await model.ainvoke(messages)
    while reply.tool_calls:
        messages += [reply, *[await ceo_of.ainvoke(call) for call in reply.tool_calls]]
        reply = await model.ainvoke(messages)
    company = question.queries[-1]
    assert asked == [company]
    assert answered(reply.content, question)
    assert messages[1].response_metadata["token_usage"]["searches"] == 1  # the server's own search, same answer

    streamed = None
    async for chunk in model.astream(messages[:1]):  # the first turn again, streamed: the call arrives whole
        streamed = chunk if streamed is None else streamed + chunk
    assert [(c["name"], c["args"]) for c in streamed.tool_calls] == [("ceo_of", {"company": f" {company}"})]


@pytest.mark.parametrize("api", ["chat_completions", "responses"])
async def test_the_agents_sdk_runs_a_function_tool(url, api, question):
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
    model = kind(MODEL, client)
    agent = Agent(name="researcher", model=model, model_settings=ModelSettings(temperature=0), tools=[ceo_of])
    result = await Runner.run(agent, question.question)
    await client.close()
    assert asked == [question.queries[-1]]
    assert answered(result.final_output, question)
    assert len(result.raw_responses) == 2  # the turn that called the function, then the answer's
    if api == "responses":
        searched = [item for item in result.raw_responses[0].output if item.type == "file_search_call"]
        assert len(searched) == 1  # the server's own search, in the same answer
