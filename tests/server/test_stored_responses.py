"""Stored responses, background mode and conversations, through the ``openai`` SDK against a live server, on SQLite
and on a real PostgreSQL server (:func:`tests.conftest.postgres`)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import openai
import pytest
import pytest_asyncio

from research.engines.args import open_engine
from research.retrieval import BatchingRetriever
from research.server.app import Server, ServerConfig, create_app
from research.testbed.models import engine_args
from research.testbed.processes import start_app, stop
from tests.conftest import MODEL, Live, serving
from tests.support.scripted import LETTERS_QUESTION, LETTERS_RESULT, SCRIPT_ANSWER, SCRIPT_QUESTION, scripted_model

STORES = ("sqlite", "postgresql")
TURN = {"model": MODEL, "max_output_tokens": 200, "temperature": 0}


def store_url(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'store.sqlite3'}"
    return request.getfixturevalue("postgres").url


@pytest_asyncio.fixture(scope="module", params=STORES)
async def stored(request, transformers_engine, script_index, tmp_path_factory) -> AsyncIterator[Live]:
    url = store_url(request.param, request, tmp_path_factory.mktemp("store"))
    async with serving(transformers_engine, script_index, store=url, max_searches=4) as live:
        yield live


@pytest.fixture
def client(stored: Live) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=stored.url, api_key="unused", max_retries=0)


async def until(condition, timeout: float = 60.0) -> None:
    for _ in range(int(timeout / 0.05)):
        if await condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the condition never held")


async def test_a_stored_response_is_retrieved_listed_and_deleted(client):
    created = await client.responses.create(input=SCRIPT_QUESTION, **TURN)
    assert created.store and created.status == "completed" and SCRIPT_ANSWER in created.output_text
    again = await client.responses.retrieve(created.id)
    assert again.model_dump() == created.model_dump()
    assert [item.type for item in again.output] == [item.type for item in created.output]
    assert "file_search_call" in {item.type for item in again.output}  # searches and passages are kept
    items = await client.responses.input_items.list(created.id)
    [item] = items.data
    assert item.type == "message" and item.role == "user" and item.content[0].text == SCRIPT_QUESTION
    assert item.id.startswith("msg_")
    deleted = await client.responses.delete(created.id)
    assert deleted is None or getattr(deleted, "deleted", True)
    with pytest.raises(openai.NotFoundError) as absent:
        await client.responses.retrieve(created.id)
    assert absent.value.code == "response_not_found"


async def test_store_false_is_not_kept(client):
    created = await client.responses.create(input=SCRIPT_QUESTION, store=False, **TURN)
    assert not created.store
    with pytest.raises(openai.NotFoundError):
        await client.responses.retrieve(created.id)
    with pytest.raises(openai.NotFoundError):
        await client.responses.create(input="and then?", previous_response_id=created.id, **TURN)


async def test_previous_response_id_is_the_prompt_of_every_turn_sent_in_input(client):
    first = await client.responses.create(input=SCRIPT_QUESTION, instructions="Answer briefly.", **TURN)
    follow_up = {"role": "user", "content": "Which country is it the capital of?"}
    chained = await client.responses.create(input=[follow_up], previous_response_id=first.id, **TURN)
    sent = [
        {"role": "user", "content": SCRIPT_QUESTION},
        *[item.model_dump(exclude_none=True) for item in first.output],
        follow_up,
    ]
    whole = await client.responses.create(input=sent, store=False, **TURN)
    assert chained.previous_response_id == first.id
    assert chained.usage.input_tokens == whole.usage.input_tokens > first.usage.input_tokens
    assert chained.output_text == whole.output_text
    # the instructions are the turn's own, not carried over (as OpenAI)
    assert chained.instructions is None
    listed = await client.responses.input_items.list(chained.id)
    assert [i.content[0].text for i in listed.data] == [follow_up["content"]]  # its own input only


async def test_a_background_response_is_polled_to_completion(client):
    created = await client.responses.create(input=SCRIPT_QUESTION, background=True, **TURN)
    assert created.background and created.status in ("queued", "in_progress")
    done = created
    for _ in range(1200):
        done = await client.responses.retrieve(created.id)
        if done.status not in ("queued", "in_progress"):
            break
        await asyncio.sleep(0.05)
    assert done.status == "completed" and SCRIPT_ANSWER in done.output_text
    async with httpx.AsyncClient() as http:
        metrics = (await http.get(str(client.base_url).removesuffix("/v1/") + "/metrics")).text
    samples = [line.rsplit(" ", 1) for line in metrics.splitlines() if not line.startswith("#")]
    counted = {name: float(value) for name, value in samples}
    assert counted['research_background_responses{status="completed"}'] >= 1
    assert counted['research_stored_objects{kind="response",status="completed"}'] >= 1


async def test_a_dropped_background_stream_resumes_with_nothing_lost_or_repeated(client):
    """Read a few events, drop the connection, resume from the last one read: the events are the whole stream's."""
    first = []
    stream = await client.responses.create(input=SCRIPT_QUESTION, background=True, stream=True, **TURN)
    async for event in stream:
        first.append(event)
        if len(first) == 5:
            break
    await stream.close()  # the connection drops; the response runs on
    rest = await client.responses.retrieve(first[0].response.id, stream=True, starting_after=first[-1].sequence_number)
    resumed = [event async for event in rest]
    events = first + resumed
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert events[-1].type == "response.completed" and SCRIPT_ANSWER in events[-1].response.output_text
    whole = await client.responses.retrieve(first[0].response.id, stream=True)
    assert [e.model_dump() for e in [event async for event in whole]] == [e.model_dump() for e in events]
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == events[-1].response.output_text


async def test_a_background_response_is_cancelled_mid_search_and_frees_the_engine(
    client, stored, held, transformers_engine, wait_idle
):
    reading, release = held
    created = await client.responses.create(input=SCRIPT_QUESTION, background=True, **TURN)
    assert await asyncio.to_thread(reading.wait, 60)
    cancelled = await client.responses.cancel(created.id)
    assert cancelled.status == "cancelled"
    assert not stored.server.background.tasks and not release.is_set()
    release.set()
    assert await wait_idle(transformers_engine) == 0
    assert (await client.responses.retrieve(created.id)).status == "cancelled"
    stream = await client.responses.retrieve(created.id, stream=True)
    assert "response.completed" not in [event.type async for event in stream]  # the stream ends


async def test_cancel_leaves_a_finished_response_as_it_ended_and_refuses_one_not_in_the_background(client):
    done = await client.responses.create(input=SCRIPT_QUESTION, background=True, **TURN)
    await until(lambda: _status_is(client, done.id, "completed"))
    assert (await client.responses.cancel(done.id)).status == "completed"
    foreground = await client.responses.create(input=SCRIPT_QUESTION, **TURN)
    with pytest.raises(openai.BadRequestError, match="only a background response can be cancelled"):
        await client.responses.cancel(foreground.id)


async def _status_is(client, id: str, status: str) -> bool:
    return (await client.responses.retrieve(id)).status == status


@pytest.mark.parametrize("after", [-2, 10_000])
async def test_starting_after_outside_the_stream_is_a_400(client, after):
    done = await client.responses.create(input=SCRIPT_QUESTION, background=True, **TURN)
    await until(lambda: _status_is(client, done.id, "completed"))
    with pytest.raises(openai.BadRequestError, match="starting_after"):
        await client.responses.retrieve(done.id, stream=True, starting_after=after)


async def test_conversations_keep_each_turn(client):
    conversations = client.conversations
    conversation = await conversations.create(
        items=[{"type": "message", "role": "user", "content": "Remember the word Freedonia."}], metadata={"topic": "t"}
    )
    assert conversation.metadata == {"topic": "t"}
    first = await client.responses.create(input=SCRIPT_QUESTION, conversation=conversation.id, **TURN)
    assert first.conversation.id == conversation.id
    second = await client.responses.create(input=SCRIPT_QUESTION, conversation={"id": conversation.id}, **TURN)
    assert second.usage.input_tokens > first.usage.input_tokens
    items = [item async for item in conversations.items.list(conversation.id, order="asc")]
    texts = [item.content[0].text for item in items if item.type == "message" and item.role == "user"]
    assert texts == ["Remember the word Freedonia.", SCRIPT_QUESTION, SCRIPT_QUESTION]
    outputs = {item.id for item in [*first.output, *second.output]}
    assert outputs <= {item.id for item in items}
    page = await conversations.items.list(conversation.id, limit=2)  # newest first
    assert [i.id for i in page.data] == [i.id for i in items[::-1][:2]] and page.has_more
    one = await conversations.items.retrieve(items[0].id, conversation_id=conversation.id)
    assert one.id == items[0].id
    await conversations.items.delete(items[0].id, conversation_id=conversation.id)
    assert len([item async for item in conversations.items.list(conversation.id)]) == len(items) - 1
    updated = await conversations.update(conversation.id, metadata={"topic": "u"})
    assert (
        updated.metadata == {"topic": "u"}
        and (await conversations.retrieve(conversation.id)).metadata == updated.metadata
    )
    added = await conversations.items.create(
        conversation.id, items=[{"type": "message", "role": "user", "content": "x"}]
    )
    assert added.data[0].id.startswith("msg_")
    assert (await conversations.delete(conversation.id)).deleted
    with pytest.raises(openai.NotFoundError) as absent:
        await conversations.retrieve(conversation.id)
    assert absent.value.code == "conversation_not_found"
    with pytest.raises(openai.NotFoundError):
        await client.responses.create(input="more", conversation=conversation.id, **TURN)


async def test_a_conversation_over_the_context_is_a_400_naming_its_stored_messages(client, stored):
    long = "Freedonia " * 1000  # 2,000 tokens a message: two of them and the question do not fit 4,096
    items = [{"role": "user", "content": long}, {"role": "assistant", "content": long}]
    conversation = await client.conversations.create(items=items)
    with pytest.raises(openai.BadRequestError) as refused:
        await client.responses.create(input=SCRIPT_QUESTION, conversation=conversation.id, **TURN)
    assert refused.value.code == "context_length_exceeded" and "2 stored messages" in refused.value.message
    assert stored.engine.max_model_len == 4096


async def test_previous_response_id_and_conversation_together_are_a_400(client):
    with pytest.raises(openai.BadRequestError, match="together"):
        await client.responses.create(input="x", previous_response_id="resp_1", conversation="conv_1", **TURN)
    with pytest.raises(openai.BadRequestError, match="background needs store"):
        await client.responses.create(input="x", background=True, store=False, **TURN)


@pytest_asyncio.fixture(scope="module", params=STORES)
async def recall(request, script_index, tmp_path_factory) -> AsyncIterator[Live]:
    """The ReCall scripted model, which calls the client's ``count_letters`` after its search, on each store."""
    url = store_url(request.param, request, tmp_path_factory.mktemp("store"))
    engine = open_engine(scripted_model(protocol="recall"), engine_args("transformers"))
    try:
        async with serving(engine, script_index, protocol="recall", store=url) as live:
            yield live
    finally:
        await engine.close()


async def test_the_agents_sdk_continues_by_previous_response_id_and_by_conversation_id(recall):
    """The runner sends the function's output alone, the server holding the turn that called it."""
    from agents import Agent, ModelSettings, OpenAIResponsesModel, Runner, function_tool, set_tracing_disabled

    set_tracing_disabled(True)  # tracing would export to api.openai.com
    counted = []

    @function_tool
    def count_letters(word: str) -> str:
        """Count the letters of a word."""
        counted.append(word.strip())
        return str(len(word.strip()))

    client = openai.AsyncOpenAI(base_url=recall.url, api_key="unused", max_retries=0)
    agent = Agent(name="researcher", model=OpenAIResponsesModel(MODEL, client), tools=[count_letters],
                  model_settings=ModelSettings(temperature=0))  # fmt: skip
    chained = await Runner.run(agent, LETTERS_QUESTION, auto_previous_response_id=True)
    assert LETTERS_RESULT in chained.final_output and counted == [SCRIPT_ANSWER]
    first, second = [raw.response_id for raw in chained.raw_responses]
    assert (await client.responses.retrieve(second)).previous_response_id == first
    own = await client.responses.input_items.list(second)
    assert [item.type for item in own.data] == ["function_call_output"]

    conversation = await client.conversations.create()
    kept = await Runner.run(agent, LETTERS_QUESTION, conversation_id=conversation.id)
    assert LETTERS_RESULT in kept.final_output and counted == [SCRIPT_ANSWER] * 2
    items = [item async for item in client.conversations.items.list(conversation.id, order="asc")]
    kinds = [item.type for item in items]
    assert kinds[0] == "message" and items[0].content[0].text == LETTERS_QUESTION
    assert kinds.index("file_search_call") < kinds.index("function_call") < kinds.index("function_call_output")
    assert kinds[-1] == "message" and LETTERS_RESULT in items[-1].content[0].text


async def test_langchain_use_previous_response_id_over_three_turns(recall):
    """Question, the tool's result, a new question: each turn sends only its new messages."""
    from langchain_core.messages import HumanMessage, ToolMessage
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI

    @tool
    def count_letters(word: str) -> str:
        """Count the letters of a word."""
        return str(len(word.strip()))

    chat = ChatOpenAI(base_url=recall.url, api_key="unused", model=MODEL, temperature=0, max_tokens=300,
                      use_previous_response_id=True)  # fmt: skip
    model = chat.bind_tools([count_letters])
    messages: list = [HumanMessage(LETTERS_QUESTION)]
    called = await model.ainvoke(messages)
    [call] = called.tool_calls
    messages += [called, ToolMessage(count_letters.invoke(call["args"]), tool_call_id=call["id"])]
    answered = await model.ainvoke(messages)
    assert LETTERS_RESULT in answered.text
    messages += [answered, HumanMessage(SCRIPT_QUESTION)]
    third = await model.ainvoke(messages)
    ids = [reply.response_metadata["id"] for reply in (called, answered, third)]
    client = openai.AsyncOpenAI(base_url=recall.url, api_key="unused", max_retries=0)
    turns = [await client.responses.retrieve(id) for id in ids]
    assert [turn.previous_response_id for turn in turns] == [None, ids[0], ids[1]]
    sent = [[item.type for item in (await client.responses.input_items.list(id)).data] for id in ids]
    assert sent == [["message"], ["function_call_output"], ["message"]]


# -- owners, the store going away, dead servers ------------------------------------------------


@pytest.mark.parametrize("kind", STORES)
async def test_another_keys_response_is_absent_with_the_same_404(kind, request, tmp_path, transformers_engine,
                                                                 script_index):  # fmt: skip
    keys = tmp_path / "keys"
    keys.write_text("# team keys\nkey-a alice\nkey-b bob\n")
    url = store_url(kind, request, tmp_path)
    async with serving(transformers_engine, script_index, store=url, api_keys_file=str(keys)) as live:
        alice = openai.AsyncOpenAI(base_url=live.url, api_key="key-a", max_retries=0)
        bob = openai.AsyncOpenAI(base_url=live.url, api_key="key-b", max_retries=0)
        mine = await alice.responses.create(input=SCRIPT_QUESTION, **TURN)
        conversation = await alice.conversations.create()
        assert (await alice.responses.retrieve(mine.id)).id == mine.id
        errors, absent_id = [], mine.id[:-4] + "0000"
        for call in (
            lambda c: c.responses.retrieve(absent_id),
            lambda c: c.responses.retrieve(mine.id),
            lambda c: c.responses.input_items.list(mine.id),
            lambda c: c.responses.delete(mine.id),
            lambda c: c.responses.create(input="x", previous_response_id=mine.id, **TURN),
        ):
            with pytest.raises(openai.NotFoundError) as absent:
                await call(bob)
            errors.append(absent.value.body)
        assert errors[1]["message"] == errors[0]["message"].replace(absent_id, mine.id)
        assert all(e["code"] == "response_not_found" for e in errors)
        with pytest.raises(openai.NotFoundError):
            await bob.conversations.retrieve(conversation.id)
        with pytest.raises(openai.AuthenticationError):
            await openai.AsyncOpenAI(base_url=live.url, api_key="nope", max_retries=0).responses.retrieve(mine.id)
        assert (await alice.responses.retrieve(mine.id)).id == mine.id  # bob's delete did nothing


async def test_the_store_down_is_a_503_with_retry_after_and_stateless_requests_still_work(
    postgres, transformers_engine, script_index
):
    async with serving(transformers_engine, script_index, store=postgres.url) as live:
        client = openai.AsyncOpenAI(base_url=live.url, api_key="unused", max_retries=0)
        kept = await client.responses.create(input=SCRIPT_QUESTION, **TURN)
        postgres.stop()
        try:
            async with httpx.AsyncClient(timeout=60) as http:
                down = await http.post(f"{live.url}/responses", json={**TURN, "input": SCRIPT_QUESTION})
                assert down.status_code == 503 and down.headers["retry-after"]
                assert down.json()["error"]["code"] == "store_unavailable"
                background = await http.post(f"{live.url}/responses", json={**TURN, "input": "x", "background": True})
                assert background.status_code == 503  # refused, not accepted and lost
                polled = await http.get(f"{live.url}/responses/{kept.id}")
                assert polled.status_code == 503
            stateless = await client.responses.create(input=SCRIPT_QUESTION, store=False, **TURN)
            assert SCRIPT_ANSWER in stateless.output_text
        finally:
            postgres.start()
        assert (await client.responses.retrieve(kept.id)).id == kept.id  # back, with nothing lost


@pytest.mark.parametrize("kind", STORES)
async def test_a_response_whose_server_died_is_failed_by_another_within_its_lease(
    kind, request, tmp_path, transformers_engine, script_index, held
):
    """Server A stops renewing its lease mid-search (as if killed); server B, on the same store, fails the response
    and ends its stream; A's late writes change nothing."""
    reading, release = held
    url = store_url(kind, request, tmp_path)
    config = ServerConfig(model_name=MODEL, template="instruct", store=url, store_lease=0.6)
    a = Server(transformers_engine, BatchingRetriever(script_index), config)
    b = Server(transformers_engine, BatchingRetriever(script_index), config)
    uv_a, task_a, base_a = await start_app(create_app(a))
    uv_b, task_b, base_b = await start_app(create_app(b))
    try:
        on_a = openai.AsyncOpenAI(base_url=f"{base_a}/v1", api_key="unused", max_retries=0)
        on_b = openai.AsyncOpenAI(base_url=f"{base_b}/v1", api_key="unused", max_retries=0)
        created = await on_a.responses.create(input=SCRIPT_QUESTION, background=True, **TURN)
        assert await asyncio.to_thread(reading.wait, 60)
        a.background._upkeep.cancel()  # A is "dead": no more lease renewals
        await until(lambda: _status_is(on_b, created.id, "failed"), timeout=30)
        failed = await on_b.responses.retrieve(created.id)
        assert "stopped before it finished" in failed.error.message
        events = [e async for e in await on_b.responses.retrieve(created.id, stream=True)]
        assert events[-1].type == "response.failed"
        release.set()
        await until(lambda: _no_tasks(a))
        assert (await on_b.responses.retrieve(created.id)).status == "failed"
    finally:
        release.set()
        for uv, task in ((uv_a, task_a), (uv_b, task_b)):
            await stop(uv, task)


async def _no_tasks(server: Server) -> bool:
    return not server.background.tasks
