"""research-serve in Search-R1's and ReCall's dialects: the real server on scripted models of each protocol,
driven by the ``openai`` SDK (chat, streaming chat, completions, Responses)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import openai
import pytest
import pytest_asyncio

from research.engines.args import open_engine
from research.testbed.models import engine_args
from tests.conftest import MODEL, Live, serving
from tests.support.scripted import SCRIPT_ANSWER, SCRIPT_QUERY, SCRIPT_QUESTION, scripted_model


@pytest_asyncio.fixture(scope="module", params=["search-r1", "recall"])
async def dialect(request: pytest.FixtureRequest, script_index) -> AsyncIterator[Live]:
    engine = open_engine(scripted_model(protocol=request.param), engine_args("transformers"))
    try:
        async with serving(engine, script_index, protocol=request.param) as live:
            yield live
    finally:
        await engine.close()


def client(live: Live) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=live.url, api_key="none", max_retries=0)


async def test_models_say_each_protocol(dialect):
    models = await client(dialect).models.list()
    assert [(m.id, m.model_extra["protocol"]) for m in models.data] == [(MODEL, dialect.server.protocol.name)]


async def test_chat_answers_with_the_search_done_on_the_server(dialect):
    reply = await client(dialect).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": SCRIPT_QUESTION}], temperature=0
    )
    message = reply.choices[0].message
    assert reply.choices[0].finish_reason == "stop"
    assert message.model_extra["answer"] == SCRIPT_ANSWER and SCRIPT_ANSWER in message.content
    assert [s["query"] for s in message.model_extra["searches"]] == [SCRIPT_QUERY]
    assert len(message.model_extra["searches"][0]["results"]) == dialect.server.protocol.default_k
    # What the protocol inserts and the model's tool call or search are reasoning, not the answer.
    for hidden in ("<information>", "<tool_call>", "<tool_response>", "<think>"):
        assert hidden not in message.content


async def test_streamed_chat_is_the_same_reply(dialect):
    stream = await client(dialect).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": SCRIPT_QUESTION}], temperature=0, stream=True
    )
    content, reasoning = [], []
    async for chunk in stream:
        if chunk.choices:
            delta = chunk.choices[0].delta
            content.append(delta.content or "")
            reasoning.append((delta.model_extra or {}).get("reasoning_content") or "")
    whole = await client(dialect).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": SCRIPT_QUESTION}], temperature=0
    )
    assert "".join(content) == whole.choices[0].message.content
    assert SCRIPT_QUERY in "".join(reasoning)


async def test_responses_and_completions_run_the_protocol_too(dialect):
    response = await client(dialect).responses.create(model=MODEL, input=SCRIPT_QUESTION, temperature=0)
    assert SCRIPT_ANSWER in response.output_text
    prompt = dialect.server.protocol.render_prompt(SCRIPT_QUESTION, "instruct", dialect.engine.tokenizer)
    completion = await client(dialect).completions.create(model=MODEL, prompt=prompt, temperature=0, max_tokens=800)
    ending = {"search-r1": f"<answer> {SCRIPT_ANSWER} </answer>", "recall": f"\\boxed{{{SCRIPT_ANSWER}}} \\]."}
    assert completion.choices[0].text.endswith(ending[dialect.server.protocol.name])


async def test_an_invalid_action_gets_the_notice_and_is_counted(script_index):
    """The ReCall model's tool call (then EOS) is no action in Search-R1's dialect: the server inserts Search-R1's
    notice, goes on, and counts it at /metrics."""
    engine = open_engine(scripted_model(protocol="recall"), engine_args("transformers"))
    try:
        async with serving(engine, script_index, protocol="search-r1", max_searches=1) as live:
            reply = await client(live).chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": SCRIPT_QUESTION}], temperature=0, max_tokens=300
            )
            async with httpx.AsyncClient() as http:
                metrics = (await http.get(live.url.removesuffix("/v1") + "/metrics")).text
    finally:
        await engine.close()
    assert "My previous action is invalid" in reply.choices[0].message.model_extra["reasoning_content"]
    notices = next(line for line in metrics.splitlines() if line.startswith("research_protocol_notices_total"))
    assert float(notices.split()[-1]) >= 1
