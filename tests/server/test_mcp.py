"""``/mcp`` on the server, driven by the official ``mcp`` SDK's client over streamable HTTP.

The server is the real one (uvicorn on loopback, the scripted model on the transformers
engine, a real LanceDB index); ``ask`` must give what ``/v1/chat/completions`` gives.
"""

from __future__ import annotations

import asyncio
import json

import httpx
import openai
import pytest
from mcp import Client

from research.clients.mcp_tools import passage_url
from tests.conftest import MODEL, serving
from tests.support.scripted import SCRIPT_ANSWER, SCRIPT_QUERY, SCRIPT_QUESTION


def mcp_url(live) -> str:
    return live.url.removesuffix("/v1") + "/mcp"


def payload(result) -> dict:
    """A tool result's structured content, checked against its JSON text (what a client without structured
    output reads)."""
    assert not result.is_error, result.content
    assert json.loads(result.content[0].text) == result.structured_content
    return result.structured_content


async def test_the_tools_are_listed_with_schemas_a_model_can_use(live_transformers):
    async with Client(mcp_url(live_transformers)) as mcp:
        tools = {tool.name: tool for tool in (await mcp.list_tools()).tools}
    assert set(tools) == {"search", "fetch", "ask"}
    for tool in tools.values():
        assert tool.description and tool.output_schema
        assert tool.annotations.read_only_hint
    assert tools["search"].input_schema["required"] == ["query"]
    assert tools["search"].input_schema["properties"]["k"]["maximum"] == 100
    assert tools["fetch"].input_schema["required"] == ["id"]
    assert tools["ask"].input_schema["required"] == ["question"]
    assert "ctx" not in tools["ask"].input_schema["properties"]


async def test_search_and_fetch_give_what_deep_research_connectors_need(live_transformers):
    async with Client(mcp_url(live_transformers)) as mcp:
        found = payload(await mcp.call_tool("search", {"query": "capital of Freedonia", "k": 2}))["results"]
        fetched = payload(await mcp.call_tool("fetch", {"id": found[0]["id"]}))
    assert len(found) == 2 and found[0]["title"] in ("Freedonia", "Marxville")
    for result in found:
        assert set(result) == {"id", "title", "url", "text"} and result["url"] == passage_url(result["title"])
    assert {k: fetched[k] for k in ("id", "title", "url", "text")} == found[0]
    assert fetched["metadata"]["contents"] == f'"{found[0]["title"]}"\n{found[0]["text"]}'


async def test_ask_runs_the_loop_with_one_progress_notification_per_search_and_matches_chat(live_transformers):
    progress = []

    async def on_progress(done: float, total: float | None, message: str | None) -> None:
        progress.append((done, total, message))

    async with Client(mcp_url(live_transformers)) as mcp:
        answer = payload(
            await mcp.call_tool("ask", {"question": SCRIPT_QUESTION, "max_searches": 2}, progress_callback=on_progress)
        )
    chat = await openai.AsyncOpenAI(base_url=live_transformers.url, api_key="unused").chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": SCRIPT_QUESTION}],
        temperature=0,
        extra_body={"max_searches": 2},
    )
    served = chat.choices[0].message.model_extra
    assert answer["answer"] == served["answer"] == SCRIPT_ANSWER
    assert [s["query"] for s in answer["searches"]] == [s["query"] for s in served["searches"]] == [SCRIPT_QUERY]
    assert [[r["id"] for r in s["results"]] for s in answer["searches"]] == [
        [p["id"] for p in s["results"]] for s in served["searches"]
    ]
    assert [c["id"] for c in answer["citations"]] == [c["id"] for c in served["citations"]]
    assert answer["finish_reason"] == "stop"
    hits = len(answer["searches"][0]["results"])
    assert progress == [(1, 2, f"searched {SCRIPT_QUERY!r}: {hits} passages")]


@pytest.mark.parametrize(
    ("tool", "arguments", "message"),
    [
        ("fetch", {"id": "no-such-passage"}, "no passage has the id 'no-such-passage'"),
        ("ask", {"question": SCRIPT_QUESTION, "max_searches": 9}, "max_searches is 9, above this server's limit of 4"),
        ("search", {"query": "x", "k": 101}, "less than or equal to 100"),
        ("search", {"query": ""}, "at least 1 character"),
    ],
)
async def test_a_failing_call_is_a_tool_error_with_the_http_apis_message(live_transformers, tool, arguments, message):
    async with Client(mcp_url(live_transformers)) as mcp:
        result = await mcp.call_tool(tool, arguments)
    assert result.is_error and message in result.content[0].text


async def test_mcp_needs_the_api_key_as_v1_does(transformers_engine, script_index):
    async with serving(transformers_engine, script_index, api_key="sesame") as live:
        async with httpx.AsyncClient() as http:
            refused = await http.post(mcp_url(live), json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"


async def test_a_caller_that_goes_away_mid_search_aborts_ask_and_frees_its_slot(
    transformers_engine, script_index, wait_idle, held
):
    """The index read is held until the caller has gone, so ``ask`` cannot have finished by itself."""
    reading, release = held
    params = {"name": "ask", "arguments": {"question": SCRIPT_QUESTION}}
    call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": params}
    accept = {"accept": "application/json, text/event-stream"}
    async with serving(transformers_engine, script_index) as live, httpx.AsyncClient(timeout=60) as http:
        async with http.stream("POST", mcp_url(live), json=call, headers=accept) as response:
            assert response.status_code == 200
            assert await asyncio.to_thread(reading.wait, 60)
            assert live.server.running == 1
        for _ in range(600):  # the connection is closed; the call is cancelled while its search is still held
            if live.server.running == 0:
                break
            await asyncio.sleep(0.05)
        assert live.server.running == 0 and not release.is_set()
        release.set()
        assert await wait_idle(transformers_engine) == 0


@pytest.mark.parametrize(
    ("headers", "body", "status", "code", "answered_id"),
    [
        ({}, {"jsonrpc": "2.0", "id": {"a": 1}, "method": "tools/list"}, 400, -32600, None),
        ({}, {"jsonrpc": "2.0", "id": [1], "method": "tools/list"}, 400, -32600, None),
        ({}, {"jsonrpc": "2.0", "id": True, "method": "tools/list"}, 400, -32600, None),
        ({}, {"jsonrpc": "1.0", "id": 7, "method": "tools/list"}, 400, -32600, 7),
        ({}, {"jsonrpc": "2.0", "id": 7, "method": "tools/list", "params": [1]}, 400, -32602, 7),
        ({}, {"jsonrpc": "2.0", "id": 7, "method": 3}, 400, -32600, 7),
        ({}, {"jsonrpc": "2.0", "id": 7}, 400, -32600, 7),
        ({}, [{"jsonrpc": "2.0", "id": 1, "method": "tools/list"}], 400, -32600, None),
        ({}, "not json {", 400, -32700, None),
        ({"content-type": "text/plain"}, {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, 415, -32600, None),
        ({"content-type": ""}, {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, 415, -32600, None),
    ],
    ids=[
        "id-object",
        "id-array",
        "id-bool",
        "jsonrpc-1.0",
        "params-array",
        "method-number",
        "neither",
        "batch",
        "not-json",
        "text-plain",
        "no-content-type",
    ],
)
async def test_a_message_that_is_not_json_rpc_2_gets_a_json_rpc_error(
    live_transformers, headers, body, status, code, answered_id
):
    content = body if isinstance(body, str) else json.dumps(body)
    sent = {"content-type": "application/json", "accept": "application/json, text/event-stream", **headers}
    async with httpx.AsyncClient(timeout=30) as http:
        refused = await http.post(mcp_url(live_transformers), content=content, headers=sent)
        assert refused.status_code == status and refused.headers["content-type"] == "application/json"
        assert refused.json()["jsonrpc"] == "2.0" and refused.json()["id"] == answered_id
        assert refused.json()["error"]["code"] == code and refused.json()["error"]["message"]
    async with Client(mcp_url(live_transformers)) as mcp:  # the next caller is served
        assert {tool.name for tool in (await mcp.list_tools()).tools} == {"search", "fetch", "ask"}
