"""The clients against a live server: ``research ask``, the LangChain tool inside a chain, the retriever."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

from langchain_core.runnables import RunnableLambda

from research.clients.langchain import ReSearchRetriever, ReSearchTool
from tests.support.scripted import SCRIPT_ANSWER, SCRIPT_QUESTION


def _ask(url: str, *flags: str) -> subprocess.CompletedProcess[str]:
    args = [sys.executable, "-m", "research.clients.ask", "ask", SCRIPT_QUESTION, "--url", url, *flags]
    return subprocess.run(args, capture_output=True, text=True, timeout=300)


async def test_research_ask_streams_text_and_prints_the_answer(live_transformers):
    out = await asyncio.to_thread(_ask, live_transformers.url)
    assert out.returncode == 0, out.stderr
    assert "[searching: capital of Freedonia]" in out.stdout and "[found: Freedonia" in out.stdout
    assert f"answer: {SCRIPT_ANSWER}" in out.stdout and "<think>" in out.stdout


async def test_research_ask_json(live_transformers):
    out = await asyncio.to_thread(_ask, live_transformers.url, "--json", "--search-top-k", "2")
    reply = json.loads(out.stdout)
    assert reply["answer"] == SCRIPT_ANSWER and reply["finish_reason"] == "stop"
    assert len(reply["searches"]) == 1 and len(reply["searches"][0]["results"]) == 2
    assert reply["usage"]["searches"] == 1 and {c["id"] for c in reply["citations"]} <= {
        r["id"] for r in reply["searches"][0]["results"]
    }


async def test_research_ask_max_searches_0_is_sent_and_search_top_k_0_is_refused(live_transformers):
    none = json.loads((await asyncio.to_thread(_ask, live_transformers.url, "--json", "--max-searches", "0")).stdout)
    assert none["searches"] == [] and none["usage"]["searches"] == 0  # 0 used to be dropped as falsy
    bad = await asyncio.to_thread(_ask, live_transformers.url, "--search-top-k", "0")
    assert bad.returncode == 2 and "--search-top-k: must be at least 1, got 0" in bad.stderr


async def test_research_ask_reports_a_server_error_in_one_line(live_transformers):
    out = await asyncio.to_thread(_ask, live_transformers.url, "--model", "nope")
    assert out.returncode == 1 and out.stderr.startswith("research ask: error:") and "does not exist" in out.stderr


async def test_the_langchain_tool_runs_inside_a_chain(live_transformers):
    tool = ReSearchTool(base_url=live_transformers.url)
    chain = RunnableLambda(lambda q: {"question": q}) | tool | RunnableLambda(lambda text: text.upper())
    result = await chain.ainvoke(SCRIPT_QUESTION)
    assert result.startswith(SCRIPT_ANSWER.upper()) and "SOURCES: FREEDONIA" in result
    sync = await asyncio.to_thread(tool.invoke, {"question": SCRIPT_QUESTION})
    assert sync.startswith(SCRIPT_ANSWER)
    assert tool.name == "research" and "question" in tool.args


async def test_the_langchain_retriever_returns_documents(live_transformers):
    retriever = ReSearchRetriever(base_url=live_transformers.url.removesuffix("/v1"), k=2, mode="hybrid")
    docs = await retriever.ainvoke("capital of Freedonia")
    assert len(docs) == 2 and docs[0].metadata["title"] == "Freedonia" and docs[0].id in {"fr-1", "fr-2"}
    sync = await asyncio.to_thread(retriever.invoke, "capital of Freedonia")
    assert [d.id for d in sync] == [d.id for d in docs]
