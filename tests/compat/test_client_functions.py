"""Unmodified third-party agents calling their own function beside the server's search, on a ReCall model.

A scripted ReCall model (``tests/support/scripted.py``) answers "How many letters are in the
name of the capital of Freedonia?" by searching (the server runs it), then calling the
client's ``count_letters``, then answering from its result. ``langchain-openai``'s
``bind_tools`` with a tool loop, and the ``openai-agents`` Runner with a ``@function_tool`` on
its chat completions model, each run the function themselves and get the answer.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import openai
import pytest
import pytest_asyncio

from research.engines.args import open_engine
from research.testbed.models import engine_args
from tests.conftest import MODEL, serving
from tests.support.scripted import LETTERS_QUESTION, LETTERS_RESULT, SCRIPT_ANSWER, scripted_model


@pytest_asyncio.fixture(scope="module")
async def url(script_index) -> AsyncIterator[str]:
    engine = open_engine(scripted_model(protocol="recall"), engine_args("transformers"))
    try:
        async with serving(engine, script_index, protocol="recall") as live:
            yield live.url
    finally:
        await engine.close()


async def test_langchain_bind_tools_and_a_tool_loop(url):
    from langchain_core.messages import HumanMessage
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI

    counted = []

    @tool
    def count_letters(word: str) -> str:
        """Count the letters of a word."""
        counted.append(word)
        return str(len(word))

    model = ChatOpenAI(base_url=url, api_key="unused", model=MODEL, temperature=0).bind_tools([count_letters])
    messages = [HumanMessage(LETTERS_QUESTION)]
    reply = await model.ainvoke(messages)
    while reply.tool_calls:
        messages += [reply, *[await count_letters.ainvoke(call) for call in reply.tool_calls]]
        reply = await model.ainvoke(messages)
    assert counted == [SCRIPT_ANSWER]
    assert f"\\boxed{{{LETTERS_RESULT}}}" in reply.content
    assert messages[1].response_metadata["token_usage"]["searches"] == 1  # the server's own search, same answer

    streamed = None
    async for chunk in model.astream(messages[:1]):  # the first turn again, streamed: the call arrives whole
        streamed = chunk if streamed is None else streamed + chunk
    assert [(c["name"], c["args"]) for c in streamed.tool_calls] == [("count_letters", {"word": SCRIPT_ANSWER})]


@pytest.mark.parametrize("api", ["chat_completions", "responses"])
async def test_the_agents_sdk_runs_a_function_tool(url, api):
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
    counted = []

    @function_tool
    def count_letters(word: str) -> str:
        """Count the letters of a word."""
        counted.append(word)
        return str(len(word))

    client = openai.AsyncOpenAI(base_url=url, api_key="unused")
    kind = OpenAIChatCompletionsModel if api == "chat_completions" else OpenAIResponsesModel
    model = kind(MODEL, client)
    agent = Agent(name="counter", model=model, model_settings=ModelSettings(temperature=0), tools=[count_letters])
    result = await Runner.run(agent, LETTERS_QUESTION)
    await client.close()
    assert counted == [SCRIPT_ANSWER]
    assert f"\\boxed{{{LETTERS_RESULT}}}" in result.final_output
    assert len(result.raw_responses) == 2  # the turn that called the function, then the answer's
    if api == "responses":
        searched = [item for item in result.raw_responses[0].output if item.type == "file_search_call"]
        assert len(searched) == 1  # the server's own search, in the same answer
