"""``research.clients``: Client / AsyncClient, ChatReSearch, the tool and the retriever against a live server."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import openai
import pytest
from langchain_core.messages import AIMessage, AIMessageChunk
from langchain_core.tools import ToolException

from research.clients import AsyncClient, Client, Done, SearchDone, SearchIssued, api_base
from research.clients.langchain import ChatReSearch, ReSearchRetriever, ReSearchTool
from research.testbed.processes import free_port
from tests.conftest import serving
from tests.support.scripted import SCRIPT_ANSWER, SCRIPT_QUESTION


def test_any_form_of_the_server_url_gives_one_api_base(monkeypatch):
    forms = ["http://h:8000", "http://h:8000/", "http://h:8000/v1", "http://h:8000/v1/"]
    assert {api_base(url) for url in forms} == {"http://h:8000/v1"}
    monkeypatch.setenv("RESEARCH_URL", "http://elsewhere:9/v1")
    assert api_base() == "http://elsewhere:9/v1"
    monkeypatch.delenv("RESEARCH_URL")
    assert api_base() == "http://127.0.0.1:8000/v1"


async def test_ask_returns_a_typed_reply(live_transformers):
    async with AsyncClient(live_transformers.url) as client:
        reply = await client.ask(SCRIPT_QUESTION, temperature=0, search_top_k=2)
    assert reply.answer == SCRIPT_ANSWER and reply.finish_reason == "stop" and reply.model == "scripted"
    assert [s.query for s in reply.searches] == ["capital of Freedonia"] and len(reply.searches[0].results) == 2
    assert reply.searches[0].results[0].title == "Freedonia" and reply.reasoning.startswith("<think>")
    assert reply.usage.searches == 1 and reply.usage.retrieved_tokens > 0
    assert {c.id for c in reply.citations} == {p.id for p in reply.searches[0].results}


async def test_stream_yields_typed_events_that_add_up_to_the_reply(live_transformers):
    async with AsyncClient(live_transformers.url) as client:
        whole = await client.ask(SCRIPT_QUESTION, temperature=0)
        events = [e async for e in client.stream(SCRIPT_QUESTION, temperature=0)]
    kinds = [type(e).__name__ for e in events]
    assert kinds.index("SearchIssued") < kinds.index("SearchDone") and isinstance(events[-1], Done)
    issued = next(e for e in events if isinstance(e, SearchIssued))
    found = next(e for e in events if isinstance(e, SearchDone))
    assert issued.query == "capital of Freedonia" and found.search == whole.searches[0]
    assert events[-1].reply == whole


async def test_the_sync_client_asks_streams_and_searches_with_or_without_v1(live_transformers):
    root = live_transformers.url.removesuffix("/v1")

    def use(url: str) -> tuple:
        with Client(url) as client:
            reply = client.ask(SCRIPT_QUESTION, temperature=0)
            last = list(client.stream(SCRIPT_QUESTION, temperature=0, max_searches=0))[-1]
            return reply.answer, last.reply.searches, client.search(["capital of Freedonia"], k=1)

    for url in (root, f"{root}/", live_transformers.url):
        answer, no_searches, found = await asyncio.to_thread(use, url)
        assert answer == SCRIPT_ANSWER and no_searches == [] and found[0][0].title == "Freedonia"


async def test_the_key_and_url_come_from_the_environment(transformers_engine, script_index, monkeypatch):
    async with serving(transformers_engine, script_index, api_key="s3cret") as live:
        monkeypatch.setenv("RESEARCH_URL", live.url.removesuffix("/v1"))
        monkeypatch.setenv("RESEARCH_API_KEY", "s3cret")
        async with AsyncClient() as client:
            assert (await client.ask(SCRIPT_QUESTION, temperature=0)).answer == SCRIPT_ANSWER
        monkeypatch.setenv("RESEARCH_API_KEY", "wrong")
        async with AsyncClient() as client:
            with pytest.raises(openai.AuthenticationError):
                await client.search(["x"])


# -- LangChain ------------------------------------------------------------------------------------


async def test_chat_research_carries_reasoning_searches_and_citations(live_transformers):
    chat = ChatReSearch(base_url=live_transformers.url, temperature=0)
    message = await chat.ainvoke(SCRIPT_QUESTION)
    assert isinstance(message, AIMessage) and message.response_metadata["answer"] == SCRIPT_ANSWER
    blocks = message.content_blocks
    assert blocks[0]["type"] == "reasoning" and "<search>" in blocks[0]["reasoning"]
    assert [b["type"] for b in blocks[1:]] == ["text"] and message.text == message.content
    searches = message.response_metadata["searches"]
    assert searches[0]["query"] == "capital of Freedonia" and searches[0]["results"][0]["title"] == "Freedonia"
    assert message.response_metadata["citations"] and message.usage_metadata["total_tokens"] > 0

    streamed: AIMessageChunk | None = None
    async for chunk in chat.astream(SCRIPT_QUESTION):
        streamed = chunk if streamed is None else streamed + chunk
    assert streamed.content == message.content and streamed.content_blocks == blocks
    assert streamed.response_metadata["searches"] == searches and streamed.usage_metadata == message.usage_metadata
    assert streamed.response_metadata["answer"] == SCRIPT_ANSWER and streamed.chunk_position == "last"

    batch = await asyncio.to_thread(chat.batch, [SCRIPT_QUESTION, SCRIPT_QUESTION])
    assert [m.response_metadata["answer"] for m in batch] == [SCRIPT_ANSWER] * 2
    cut = await chat.ainvoke(SCRIPT_QUESTION, stop=["boxed"])  # the answer ends at the stop; the search ran
    assert cut.response_metadata["stop_reason"] == "boxed" and cut.content.endswith("\\[ \\")
    assert cut.response_metadata["searches"] == searches


async def test_the_tool_gives_the_answer_as_content_and_the_passages_as_artifact(live_transformers):
    tool = ReSearchTool(base_url=live_transformers.url.removesuffix("/v1"))  # without /v1 as well
    call = {"type": "tool_call", "id": "call-1", "name": "research", "args": {"question": SCRIPT_QUESTION}}
    message = await tool.ainvoke(call)
    assert message.content.startswith(SCRIPT_ANSWER) and "(sources: Freedonia" in message.content
    assert message.artifact["searches"][0]["results"][0]["title"] == "Freedonia"
    silent = ReSearchTool(base_url=live_transformers.url, max_searches=0)
    assert (await silent.ainvoke({"question": SCRIPT_QUESTION})).strip()  # used to be an empty string


async def test_tool_errors_are_tool_exceptions_an_agent_can_read(live_transformers):
    nowhere = ReSearchTool(base_url=f"http://127.0.0.1:{free_port()}", max_retries=0)
    with pytest.raises(ToolException, match="failed to answer: Connection error"):
        await nowhere.ainvoke({"question": "q"})
    wrong_model = ReSearchTool(base_url=live_transformers.url, model="nope", handle_tool_error=True)
    assert "does not exist" in await wrong_model.ainvoke({"question": "q"})


async def test_the_retriever_takes_the_url_with_or_without_v1(live_transformers):
    for url in (live_transformers.url, live_transformers.url.removesuffix("/v1")):
        docs = await ReSearchRetriever(base_url=url, k=2).ainvoke("capital of Freedonia")
        assert len(docs) == 2 and docs[0].metadata["title"] == "Freedonia"  # /v1 used to become /v1/v1/search


async def test_a_passage_by_id_as_a_search_returned_it(live_transformers):
    async with AsyncClient(live_transformers.url) as client:
        [[found, *_]] = await client.search(["capital of Freedonia"], k=2)
        assert await client.passage(found.id) == found.__class__(found.id, found.contents)  # no score: not searched
        with pytest.raises(openai.NotFoundError) as missing:
            await client.passage("no/such passage")
    assert missing.value.body["code"] == "passage_not_found"
    assert missing.value.body["message"] == "no passage has the id 'no/such passage'"
    with Client(live_transformers.url) as client:
        assert (await asyncio.to_thread(client.passage, "fr-2")).title == "Marxville"


def test_the_clients_import_none_of_the_server_stack():
    heavy = ("torch", "transformers", "vllm", "lancedb", "pyarrow", "fastapi", "trl", "sentence_transformers")
    code = (
        "import sys, research.clients, research.clients.ask, research.clients.langchain\n"
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({heavy!r})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("script", "args", "extra"),
    [
        ("serve", ["--model", "m", "--index", "i"], "serve"),
        ("index", ["search", "--index", "i", "q"], "index"),
        ("evaluate", ["--out", "o", "--dataset", "bamboogle", "--model", "m", "--index", "i"], "eval"),
        ("train", ["--base", "qwen2.5-32b", "--dry-run"], "train"),
        ("demo", [], "testbed"),
        ("research", ["mcp", "--index", "i"], "index,mcp"),
    ],
)
def test_a_server_side_command_in_a_client_only_install_names_the_extra_to_install(
    script: str, args: list[str], extra: str, tmp_path
):
    """The client-only install lacks the server stack: importing any of it fails as a missing package does."""
    blocked = ("torch", "transformers", "vllm", "lancedb", "pyarrow", "fastapi", "uvicorn", "trl")
    out = run_blocking(blocked, args, script, tmp_path)
    assert out.returncode == 2, out.stderr
    assert out.stderr.count("\n") == 1 and f"pip install 'research-serve[{extra}]'" in out.stderr, out.stderr


def test_research_mcp_in_front_of_a_server_needs_the_mcp_sdk_alone(tmp_path):
    """``research mcp --url`` loads neither engine nor index (its module imports none of them), and without the
    ``mcp`` SDK names the [mcp] extra."""
    heavy = ("torch", "transformers", "vllm", "lancedb", "pyarrow", "fastapi", "uvicorn", "trl")
    out = run_blocking(heavy, ["mcp", "--help"], "research", tmp_path)
    assert out.returncode == 0 and "--url URL" in out.stdout, out.stderr
    out = run_blocking(("mcp",), ["mcp", "--url", "http://127.0.0.1:9"], "research", tmp_path)
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
    assert "mcp is not installed: pip install 'research-serve[mcp]'" in out.stderr


def run_blocking(blocked: tuple[str, ...], args: list[str], script: str, cwd) -> subprocess.CompletedProcess:
    """``script`` of research.cli.entry with ``args``, as if the ``blocked`` packages were not installed."""
    code = (
        "import importlib.abc, sys\n"
        "class Missing(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        f"        if name.split('.')[0] in {blocked!r}:\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, Missing())\n"
        f"sys.argv[1:] = {args!r}\n"
        f"from research.cli.entry import {script}\n"
        f"sys.exit({script}())\n"
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd)
