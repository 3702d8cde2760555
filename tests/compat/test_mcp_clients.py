"""Unmodified MCP clients against the live server's ``/mcp`` and against ``research mcp`` over stdio.

The official ``mcp`` SDK's client over stdio (``research mcp --url``, ``research mcp --index``);
the OpenAI Agents SDK's ``MCPServerStreamableHttp`` (behind an API key) and ``MCPServerStdio``;
LangChain's ``langchain-mcp-adapters`` loading the tools and invoking ``ask``. That last one
pins ``mcp<2`` while vLLM needs ``mcp>=2``, so it runs in its own environment
(``.venv-langchain-mcp``, made by ``.ci/setup``), as a user's separate agent process would.
Each lists the tools and calls each one; ``ask`` must give the server's own chat answer.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest
from agents.mcp import MCPServerStdio, MCPServerStreamableHttp
from mcp import Client, StdioServerParameters

from tests.conftest import serving
from tests.support.scripted import SCRIPT_ANSWER, SCRIPT_QUERY, SCRIPT_QUESTION

RESEARCH = str(Path(sys.executable).parent / "research")
LANGCHAIN_PYTHON = Path(__file__).parents[2] / ".venv-langchain-mcp" / "bin" / "python"
ASK = {"question": SCRIPT_QUESTION, "max_searches": 2}


def mcp_url(url: str) -> str:
    return url.removesuffix("/v1") + "/mcp"


def structured(result) -> dict:
    assert not result.is_error, result.content
    return json.loads(result.content[0].text)


async def test_the_mcp_sdk_over_stdio_in_front_of_a_running_server(live_transformers):
    progress = []

    async def on_progress(done: float, total: float | None, message: str | None) -> None:
        progress.append((done, message))

    command = StdioServerParameters(command=RESEARCH, args=["mcp", "--url", live_transformers.url])
    async with Client(command) as mcp:
        assert {t.name for t in (await mcp.list_tools()).tools} == {"search", "fetch", "ask"}
        [first, *_] = structured(await mcp.call_tool("search", {"query": SCRIPT_QUERY}))["results"]
        fetched = structured(await mcp.call_tool("fetch", {"id": first["id"]}))
        answer = structured(await mcp.call_tool("ask", ASK, progress_callback=on_progress))
        missing = await mcp.call_tool("fetch", {"id": "no-such-passage"})
    assert fetched["text"] == first["text"] and fetched["url"] == first["url"]
    assert answer["answer"] == SCRIPT_ANSWER and [s["query"] for s in answer["searches"]] == [SCRIPT_QUERY]
    assert [done for done, _ in progress] == [1] and SCRIPT_QUERY in progress[0][1]
    assert missing.is_error and missing.content[0].text.endswith("no passage has the id 'no-such-passage'")


async def test_the_mcp_sdk_over_stdio_on_a_local_index(script_index):
    command = StdioServerParameters(command=RESEARCH, args=["mcp", "--index", script_index.uri, "--search-top-k", "2"])
    async with Client(command) as mcp:
        assert {t.name for t in (await mcp.list_tools()).tools} == {"search", "fetch"}
        results = structured(await mcp.call_tool("search", {"query": SCRIPT_QUERY}))["results"]
        fetched = structured(await mcp.call_tool("fetch", {"id": results[0]["id"]}))
    assert len(results) == 2 and {r["id"] for r in results} == {"fr-1", "fr-2"}
    assert fetched["id"] == results[0]["id"] and fetched["metadata"]["source"] == "wiki-18"


def test_research_mcp_refuses_a_missing_index_in_one_line(tmp_path):
    done = subprocess.run([RESEARCH, "mcp", "--index", str(tmp_path / "nowhere")], capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.startswith("research mcp: error: no passage index at") and done.stderr.count("\n") == 1


async def test_the_agents_sdk_over_streamable_http_with_an_api_key(transformers_engine, script_index):
    async with serving(transformers_engine, script_index, api_key="sesame") as live:
        params = {"url": mcp_url(live.url), "headers": {"Authorization": "Bearer sesame"}, "timeout": 60}
        async with MCPServerStreamableHttp(params, client_session_timeout_seconds=120) as server:
            assert {t.name for t in await server.list_tools()} == {"search", "fetch", "ask"}
            results = structured(await server.call_tool("search", {"query": SCRIPT_QUERY, "k": 1}))["results"]
            fetched = structured(await server.call_tool("fetch", {"id": results[0]["id"]}))
            answer = structured(await server.call_tool("ask", ASK))
    assert fetched["title"] == results[0]["title"]
    assert answer["answer"] == SCRIPT_ANSWER


async def test_the_agents_sdk_over_stdio(live_transformers):
    params = {"command": RESEARCH, "args": ["mcp", "--url", live_transformers.url]}
    async with MCPServerStdio(params, client_session_timeout_seconds=120) as server:
        assert {t.name for t in await server.list_tools()} == {"search", "fetch", "ask"}
        results = structured(await server.call_tool("search", {"query": SCRIPT_QUERY}))["results"]
        fetched = structured(await server.call_tool("fetch", {"id": results[-1]["id"]}))
        answer = structured(await server.call_tool("ask", ASK))
    assert fetched["id"] == results[-1]["id"]
    assert answer["answer"] == SCRIPT_ANSWER and answer["citations"]


LANGCHAIN_PROBE = """
import asyncio, json, sys
from langchain_mcp_adapters.client import MultiServerMCPClient

async def main(url, question):
    client = MultiServerMCPClient({"research": {"url": url, "transport": "streamable_http"}})
    tools = {tool.name: tool for tool in await client.get_tools()}
    answer = await tools["ask"].ainvoke({"question": question, "max_searches": 2})
    print(json.dumps({"tools": sorted(tools), "answer": answer}, default=str))

asyncio.run(main(*sys.argv[1:]))
"""


@pytest.mark.skipif(not LANGCHAIN_PYTHON.exists(), reason="no .venv-langchain-mcp: run .ci/setup")
async def test_langchain_mcp_adapters_load_the_tools_and_invoke_ask(live_transformers):
    done = await asyncio.to_thread(
        subprocess.run,
        [str(LANGCHAIN_PYTHON), "-c", LANGCHAIN_PROBE, mcp_url(live_transformers.url), SCRIPT_QUESTION],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["tools"] == ["ask", "fetch", "search"]
    [block] = out["answer"]  # LangChain's content blocks: the tool's JSON text
    answer = json.loads(block["text"])
    assert answer["answer"] == SCRIPT_ANSWER and [s["query"] for s in answer["searches"]] == [SCRIPT_QUERY]
