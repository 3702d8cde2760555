"""research-serve in Search-R1's and ReCall's dialects: the real server on scripted models of each protocol,
driven by the ``openai`` SDK (chat, streaming chat, completions, Responses)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import openai
import pytest
import pytest_asyncio

from research.engines.args import open_engine
from research.protocol import run_search_loop
from research.protocol.recall import SEARCH_SCHEMA
from research.server.continuations import Continuations
from research.testbed.models import engine_args
from tests.conftest import MODEL, Live, serving
from tests.support.scripted import (
    LETTERS_CALL,
    LETTERS_QUESTION,
    LETTERS_TOOL,
    SCRIPT_ANSWER,
    SCRIPT_QUERY,
    SCRIPT_QUESTION,
    scripted_model,
)


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


# -- the client's own functions beside the hosted search (ReCall) ---------------------------------


@pytest_asyncio.fixture(scope="module")
async def recall(script_index) -> AsyncIterator[Live]:
    engine = open_engine(scripted_model(protocol="recall"), engine_args("transformers"))
    try:
        async with serving(engine, script_index, protocol="recall") as live:
            yield live
    finally:
        await engine.close()


ASK_LETTERS = {"model": MODEL, "messages": [{"role": "user", "content": LETTERS_QUESTION}], "tools": [LETTERS_TOOL],
               "temperature": 0}  # fmt: skip


async def test_a_client_function_round_trip_continues_the_turn_exactly(recall):
    sdk = client(recall)
    first = await sdk.chat.completions.create(**ASK_LETTERS)
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.function.name == "count_letters" and json.loads(call.function.arguments) == {"word": SCRIPT_ANSWER}
    assert [s["query"] for s in choice.message.model_extra["searches"]] == [SCRIPT_QUERY]  # the hosted search, done
    messages = [*ASK_LETTERS["messages"], choice.message, {"role": "tool", "tool_call_id": call.id, "content": "9"}]
    second = await sdk.chat.completions.create(**{**ASK_LETTERS, "messages": messages})
    assert second.choices[0].finish_reason == "stop" and second.choices[0].message.model_extra["answer"] == "9"
    assert "\\boxed{9}" in second.choices[0].message.content

    # Exactly where the loop would have gone on: the same ids, the client's result in the tool turn.
    protocol, tok = recall.server.protocol, recall.engine.tokenizer
    prompt = tok.encode(protocol.render_prompt(LETTERS_QUESTION, "instruct", tools=[SEARCH_SCHEMA, LETTERS_TOOL]))
    retriever = recall.server.retriever.using("vector")
    traj = await run_search_loop(recall.engine, retriever, prompt, protocol=protocol, client_tools={"count_letters"})
    remembered = recall.server.continuations.find([call.id], prompt)
    assert remembered is not None and list(remembered.ids) == prompt + traj.completion_ids  # the model's own ids
    continued = prompt + traj.completion_ids + tok.encode(traj.pending.reply(protocol, {0: "9"}))
    turn = f"<tool_response>{LETTERS_CALL}\n9\n</tool_response>\n<|im_end|>\n<|im_start|>assistant\n<think>"
    assert tok.decode(continued).endswith(turn)
    assert second.usage.prompt_tokens == len(continued)


async def test_streamed_tool_calls_reach_the_sdk(recall):
    stream = await client(recall).chat.completions.create(**ASK_LETTERS, stream=True)
    calls, finish = {}, None
    async for chunk in stream:
        for choice in chunk.choices:
            for delta in choice.delta.tool_calls or []:
                calls[delta.index] = (delta.id, delta.function.name, delta.function.arguments)
            finish = choice.finish_reason or finish
    assert finish == "tool_calls"
    assert [(name, json.loads(arguments)) for _, name, arguments in calls.values()] == [
        ("count_letters", {"word": SCRIPT_ANSWER})
    ]


async def test_a_continuation_the_server_does_not_remember_is_rendered_from_the_messages(recall):
    first = await client(recall).chat.completions.create(**ASK_LETTERS)
    message = first.choices[0].message
    (call,) = message.tool_calls
    recall.server.continuations = Continuations()  # as after a restart, or on another replica
    messages = [*ASK_LETTERS["messages"], message, {"role": "tool", "tool_call_id": call.id, "content": "9"}]
    again = await client(recall).chat.completions.create(**{**ASK_LETTERS, "messages": messages, "max_tokens": 64})
    assert again.choices[0].finish_reason in {"stop", "length", "tool_calls"}


@pytest.mark.parametrize(
    ("tail", "param", "message"),
    [
        ([{"role": "tool", "tool_call_id": "call_other", "content": "9"}], "messages.2.tool_call_id", "call_other"),
        ([], "messages.1.tool_calls.0.id", "has no tool message"),
    ],
    ids=["unknown-id", "unanswered"],
)
async def test_tool_messages_must_answer_the_calls(recall, tail, param, message):
    asked = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "count_letters", "arguments": '{"word": "x"}'}}
        ],
    }
    body = {**ASK_LETTERS, "messages": [*ASK_LETTERS["messages"], asked, *tail]}
    if not tail:
        body["messages"].append({"role": "user", "content": "and?"})
    async with httpx.AsyncClient(base_url=recall.url, timeout=60) as http:
        reply = await http.post("/chat/completions", json=body)
    error = reply.json()["error"]
    assert reply.status_code == 400 and error["param"] == param and message in error["message"], error


@pytest.mark.parametrize(
    ("tools", "param"),
    [([{"type": "function"}], "tools.0"), ([{**LETTERS_TOOL, "function": {"name": "wikipedia_search"}}],
     "tools.0.function.name")],
    ids=["no-function", "the-search-tools-name"],
)  # fmt: skip
async def test_bad_tools_are_refused_naming_them(recall, tools, param):
    async with httpx.AsyncClient(base_url=recall.url, timeout=60) as http:
        reply = await http.post("/chat/completions", json={**ASK_LETTERS, "tools": tools})
    assert reply.status_code == 400 and reply.json()["error"]["param"] == param, reply.text


async def test_other_protocols_refuse_client_functions(dialect):
    if dialect.server.protocol.takes_tools:
        return
    async with httpx.AsyncClient(base_url=dialect.url, timeout=60) as http:
        reply = await http.post("/chat/completions", json={**ASK_LETTERS})
    assert reply.status_code == 400 and reply.json()["error"]["param"] == "tools"


RESPONSES_LETTERS_TOOL = {"type": "function", **LETTERS_TOOL["function"]}


async def test_a_responses_function_call_round_trip(recall):
    sdk = client(recall)
    ask = {"model": MODEL, "tools": [RESPONSES_LETTERS_TOOL], "temperature": 0}
    first = await sdk.responses.create(input=LETTERS_QUESTION, **ask)
    assert first.status == "completed"
    assert [item.type for item in first.output if item.type != "reasoning"] == ["file_search_call", "function_call"]
    (call,) = [item for item in first.output if item.type == "function_call"]
    assert call.name == "count_letters" and json.loads(call.arguments) == {"word": SCRIPT_ANSWER}
    output = {"type": "function_call_output", "call_id": call.call_id, "output": "9"}
    items = [{"role": "user", "content": LETTERS_QUESTION}, *[i.model_dump() for i in first.output], output]
    second = await sdk.responses.create(input=items, **ask)
    assert second.status == "completed" and "\\boxed{9}" in second.output_text

    async with sdk.responses.stream(input=LETTERS_QUESTION, **ask) as stream:
        async for _ in stream:
            pass
        final = await stream.get_final_response()
    streamed = [item for item in final.output if item.type == "function_call"]
    assert [(c.name, json.loads(c.arguments)) for c in streamed] == [("count_letters", {"word": SCRIPT_ANSWER})]


async def test_a_tool_result_over_the_context_is_refused_before_the_engine(recall):
    first = await client(recall).chat.completions.create(**ASK_LETTERS)
    message = first.choices[0].message
    huge = {"role": "tool", "tool_call_id": message.tool_calls[0].id, "content": "many words " * 20_000}
    with pytest.raises(openai.BadRequestError) as refused:
        await client(recall).chat.completions.create(**{**ASK_LETTERS, "messages": [*ASK_LETTERS["messages"], message,
                                                                                      huge]})  # fmt: skip
    assert refused.value.code == "context_length_exceeded"
