"""research-serve searching the web: the pages as URL citations, as the openai SDK and LangChain read them.

The provider is Tavily's API replayed by :class:`tests.support.web_providers.Replay` (no
provider can be reached from here) over the script index, so the model reads the same
passages as from the local index and must answer the same; what changes is how the
searches and citations are shown: ``web_search_call`` items and ``url_citation`` annotations.
"""

from __future__ import annotations

import openai
import pytest_asyncio
from openai.types.chat.chat_completion_message import Annotation
from openai.types.responses import ResponseFunctionWebSearch
from openai.types.responses.response_output_text import AnnotationURLCitation

from research.retrieval import BatchingRetriever, WebSearch
from research.server.app import Server, ServerConfig
from research.testbed.processes import start_app, stop
from tests.conftest import MODEL, start
from tests.support.scripted import SCRIPT_ANSWER, SCRIPT_QUERY, SCRIPT_QUESTION
from tests.support.web_providers import KEY, Replay

ASK = {"model": MODEL, "temperature": 0}
SOURCES = ["web_search_call.action.sources"]


@pytest_asyncio.fixture
async def web(transformers_engine, script_index):
    """(the web-searching server's client, the replay, the pages' URLs for SCRIPT_QUERY)."""
    replay = Replay(script_index)
    uv_replay, replay_task, replay.base = await start_app(replay.app)
    retriever = BatchingRetriever(WebSearch("tavily", replay.url("tavily"), key=KEY))
    server = Server(transformers_engine, retriever, ServerConfig(model_name=MODEL, template="instruct"))
    uv, task, base = await start(server)
    client = openai.AsyncOpenAI(base_url=f"{base}/v1", api_key="unused")
    pages = [f"{replay.base}/pages/{p.id}" for p in script_index.search([SCRIPT_QUERY], k=5)[0]]
    yield client, replay, pages
    await client.close()
    await stop(uv, task)
    await retriever.close()
    await stop(uv_replay, replay_task)


async def test_chat_cites_the_pages_it_read_as_url_citations(web, live_transformers):
    client, _, pages = web
    reply = await client.chat.completions.create(messages=[{"role": "user", "content": SCRIPT_QUESTION}], **ASK)
    message = reply.choices[0].message
    local = openai.AsyncOpenAI(base_url=live_transformers.url, api_key="unused")
    indexed = await local.chat.completions.create(messages=[{"role": "user", "content": SCRIPT_QUESTION}], **ASK)
    await local.close()
    same = indexed.choices[0].message
    assert message.content == same.content and message.model_extra["answer"] == SCRIPT_ANSWER
    [search] = message.model_extra["searches"]
    assert search["query"] == SCRIPT_QUERY and [p["url"] for p in search["results"]] == pages
    assert [p["contents"] for p in search["results"]] == [
        p["contents"] for p in same.model_extra["searches"][0]["results"]
    ]
    assert all(isinstance(a, Annotation) for a in message.annotations)
    assert [a.url_citation.url for a in message.annotations] == pages
    assert [a.url_citation.title for a in message.annotations] == [c["title"] for c in message.model_extra["citations"]]
    assert {(a.url_citation.start_index, a.url_citation.end_index) for a in message.annotations} == {
        (0, len(message.content))
    }
    assert same.annotations is None  # the local index's passages are no web pages

    async with client.chat.completions.stream(messages=[{"role": "user", "content": SCRIPT_QUESTION}], **ASK) as s:
        async for _ in s:
            pass
        streamed = (await s.get_final_completion()).choices[0].message
    assert streamed.content == message.content
    assert [a.url_citation.url for a in streamed.annotations] == pages  # on the last chunk, as the SDK accumulates


async def test_responses_show_web_search_calls_with_their_sources_when_included(web):
    client, _, pages = web
    plain = await client.responses.create(input=SCRIPT_QUESTION, **ASK)
    sourced = await client.responses.create(input=SCRIPT_QUESTION, include=SOURCES, **ASK)
    async with client.responses.stream(input=SCRIPT_QUESTION, include=SOURCES, **ASK) as stream:
        kinds = [event.type async for event in stream]
        streamed = await stream.get_final_response()
    assert [k for k in kinds if k.startswith("response.web_search_call")] == [
        "response.web_search_call.in_progress", "response.web_search_call.searching",
        "response.web_search_call.completed",
    ]  # fmt: skip
    for response in (plain, sourced, streamed):
        assert [item.type for item in response.output] == ["reasoning", "web_search_call", "reasoning", "message"]
        call = response.output[1]
        assert isinstance(call, ResponseFunctionWebSearch) and call.status == "completed"
        assert call.action.type == "search" and call.action.query == SCRIPT_QUERY
        expected = None if response is plain else pages
        assert (call.action.sources and [s.url for s in call.action.sources]) == expected
        text = response.output[-1].content[0]
        assert all(isinstance(a, AnnotationURLCitation) for a in text.annotations)
        assert [a.url for a in text.annotations] == pages and {a.end_index for a in text.annotations} == {
            len(text.text)
        }
        assert response.output_text == text.text and SCRIPT_ANSWER in response.output_text


async def test_langchain_reads_the_web_search_its_sources_and_the_citations(web):
    """LangChain's standard content blocks from the Responses API (its chat-completions reader keeps no
    annotations, whoever the server)."""
    from langchain_openai import ChatOpenAI

    client, _, pages = web
    chat = ChatOpenAI(base_url=str(client.base_url), api_key="unused", model=MODEL, temperature=0,
                      use_responses_api=True, include=SOURCES)  # fmt: skip
    blocks = (await chat.ainvoke(SCRIPT_QUESTION)).content_blocks
    assert [b["type"] for b in blocks] == ["reasoning", "server_tool_call", "server_tool_result", "reasoning", "text"]
    call, result, text = blocks[1], blocks[2], blocks[-1]
    assert call["name"] == "web_search" and call["args"] == {"type": "search", "query": SCRIPT_QUERY}
    assert result["tool_call_id"] == call["id"] and result["status"] == "success"
    assert [s["url"] for s in result["output"]["sources"]] == pages
    assert [a["type"] for a in text["annotations"]] == ["citation"] * len(pages)
    assert [a["url"] for a in text["annotations"]] == pages and SCRIPT_ANSWER in text["text"]
