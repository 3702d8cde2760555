"""The chat API with the real ``openai`` SDK (sync and async, stream and not) and raw SSE, on every engine."""

from __future__ import annotations

import asyncio
import json

import httpx
import openai

from tests.support.scripted import SCRIPT_ANSWER, SCRIPT_BEFORE, SCRIPT_QUERY, SCRIPT_QUESTION

MODEL = "scripted"
QUESTION = [{"role": "user", "content": SCRIPT_QUESTION}]


def ask(**extra):
    return {"model": MODEL, "messages": QUESTION, "temperature": 0, **extra}


async def test_non_streaming_answer_reasoning_searches_and_citations(live):
    client = openai.AsyncOpenAI(base_url=live.url, api_key="unused")
    reply = await client.chat.completions.create(**ask())
    choice = reply.choices[0]
    message = choice.model_dump()["message"]
    assert choice.finish_reason == "stop"
    assert message["answer"] == SCRIPT_ANSWER
    assert SCRIPT_ANSWER in message["content"] and "<answer>" not in message["content"]
    [search] = message["searches"]
    assert search["query"] == SCRIPT_QUERY and len(search["results"]) == 5
    assert message["reasoning"].startswith(SCRIPT_BEFORE) and "<result>" in message["reasoning"]
    assert message["reasoning_content"] == message["reasoning"]
    retrieved = {r["id"] for r in search["results"]}
    assert {c["id"] for c in message["citations"]} == retrieved
    assert all(c["title"] for c in message["citations"])
    usage = reply.usage.model_dump()
    assert usage["searches"] == 1 and usage["retrieved_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    await client.close()


async def test_streaming_shows_every_search_and_ends_with_answer_citations_and_usage(live):
    client = openai.AsyncOpenAI(base_url=live.url, api_key="unused")
    stream = await client.chat.completions.create(**ask(stream=True, stream_options={"include_usage": True}))
    chunks = [chunk async for chunk in stream]
    deltas = [c.choices[0].delta.model_dump() for c in chunks if c.choices]
    assert deltas[0]["role"] == "assistant"
    reasoning = "".join(d.get("reasoning") or "" for d in deltas)
    content = "".join(d.get("content") or "" for d in deltas)
    searches = [s for d in deltas for s in d.get("searches") or []]
    assert searches[0] == {"index": 0, "query": SCRIPT_QUERY}  # announced, then (same index) only the results
    assert set(searches[1]) == {"index", "results"} and searches[1]["index"] == 0 and len(searches[1]["results"]) == 5
    assert reasoning.startswith(SCRIPT_BEFORE)
    assert "<result>" in reasoning and "</result>" in reasoning  # the result block streams as reasoning
    assert SCRIPT_ANSWER in content and "<think>" not in content
    last = [c for c in chunks if c.choices][-1]
    assert last.choices[0].finish_reason == "stop"
    final = last.choices[0].delta.model_dump()
    assert final["answer"] == SCRIPT_ANSWER
    assert {c["id"] for c in final["citations"]} == {r["id"] for r in searches[1]["results"]}
    assert chunks[-1].choices == [] and chunks[-1].usage.model_dump()["searches"] == 1
    assert len({c.id for c in chunks}) == 1
    await client.close()


async def test_the_sync_client_streams_and_completes_too(live):
    def run() -> tuple[str, str]:
        with openai.OpenAI(base_url=live.url, api_key="unused") as client:
            reply = client.chat.completions.create(**ask())
            streamed = "".join(
                c.choices[0].delta.content or "" for c in client.chat.completions.create(**ask(stream=True))
            )
            return reply.choices[0].message.content, streamed

    whole, streamed = await asyncio.to_thread(run)
    assert whole == streamed and SCRIPT_ANSWER in whole


async def test_raw_reasoning_format_streams_everything_as_content(live):
    client = openai.AsyncOpenAI(base_url=live.url, api_key="unused")
    reply = await client.chat.completions.create(**ask(), extra_body={"reasoning_format": "raw"})
    message = reply.choices[0].message.model_dump()
    assert message["content"].startswith(SCRIPT_BEFORE) and message["content"].endswith("</answer>")
    assert "reasoning" not in message or message["reasoning"] is None
    await client.close()


async def test_sse_framing_byte_by_byte(live):
    async with (
        httpx.AsyncClient(timeout=120) as http,
        http.stream("POST", f"{live.url}/chat/completions", json=ask(stream=True)) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        body = b"".join([chunk async for chunk in response.aiter_raw()])
    events = body.split(b"\n\n")
    assert events[-1] == b"" and events[-2] == b"data: [DONE]"
    for event in events[:-2]:
        assert event.startswith(b"data: ") and b"\n" not in event
        chunk = json.loads(event[len(b"data: ") :])
        assert chunk["object"] == "chat.completion.chunk" and chunk["model"] == MODEL
        assert set(chunk["choices"][0]) >= {"index", "delta", "finish_reason"}
    assert json.loads(events[-3][6:])["choices"][0]["finish_reason"] == "stop"


async def test_search_budget_and_top_k_per_request(live):
    client = openai.AsyncOpenAI(base_url=live.url, api_key="unused")
    none = await client.chat.completions.create(**ask(), extra_body={"max_searches": 0})
    choice = none.choices[0].model_dump()
    assert choice["finish_reason"] == "stop" and choice["stop_reason"] == "search_limit"
    assert choice["message"]["searches"] == [] and choice["message"]["answer"] is None
    two = await client.chat.completions.create(**ask(), extra_body={"search_top_k": 2, "search_mode": "hybrid"})
    [search] = two.choices[0].model_dump()["message"]["searches"]
    assert len(search["results"]) == 2
    await client.close()
