"""Operations: auth, admission control, models, health, metrics, completions, the mounted retriever, failures."""

from __future__ import annotations

import asyncio
import shutil

import httpx
import openai
import pytest

from research.protocol import render_prompt
from research.retrieval import Passage, build_index
from tests.conftest import serving
from tests.support.scripted import SCRIPT_ANSWER, SCRIPT_QUESTION

MODEL = "scripted"
ASK = {"model": MODEL, "messages": [{"role": "user", "content": SCRIPT_QUESTION}], "temperature": 0}


async def test_an_api_key_is_required_when_set(transformers_engine, script_index):
    async with serving(transformers_engine, script_index, api_key="s3cret") as live:
        async with httpx.AsyncClient(base_url=live.url, timeout=60) as http:
            denied = await http.post("/chat/completions", json=ASK)
            wrong = await http.get("/models", headers={"Authorization": "Bearer nope"})
            retriever = await http.post("/search", json={"query": "Freedonia"})
            health = await http.get(live.url.removesuffix("/v1") + "/health")
            lower = await http.get("/models", headers={"Authorization": "bearer s3cret"})  # the scheme is case-blind
        client = openai.AsyncOpenAI(base_url=live.url, api_key="s3cret")
        reply = await client.chat.completions.create(**ASK)
        await client.close()
    assert denied.status_code == wrong.status_code == retriever.status_code == 401
    assert denied.json()["error"]["code"] == "invalid_api_key" and denied.headers["www-authenticate"] == "Bearer"
    assert health.status_code == lower.status_code == 200
    assert reply.choices[0].message.model_dump()["answer"] == SCRIPT_ANSWER


async def test_the_drop_in_retriever_routes_can_stay_open_under_a_key(transformers_engine, script_index):
    """ReSearch's and Search-R1's retriever clients send no key; /v1/* keeps needing it."""
    async with (
        serving(transformers_engine, script_index, api_key="s3cret", open_retriever_routes=True) as live,
        httpx.AsyncClient(base_url=live.url.removesuffix("/v1"), timeout=60) as http,
    ):
        research = await http.post("/search", json={"query": "Freedonia", "top_n": 1})
        search_r1 = await http.post("/retrieve", json={"queries": ["Freedonia"], "topk": 1})
        ours = await http.post("/v1/search", json={"queries": ["Freedonia"]})
        chat = await http.post("/v1/chat/completions", json=ASK)
    assert research.status_code == search_r1.status_code == 200 and research.json()[0]["id"].startswith("fr")
    assert ours.status_code == chat.status_code == 401


async def test_over_the_concurrency_limit_is_a_429_with_retry_after(transformers_engine, script_index):
    async with (
        serving(transformers_engine, script_index, max_concurrent_requests=1) as live,
        httpx.AsyncClient(base_url=live.url, timeout=60) as http,
    ):
        async with http.stream("POST", "/chat/completions", json={**ASK, "stream": True}) as first:
            chunks = first.aiter_raw()
            await chunks.__anext__()  # the first request is in flight
            second = await http.post("/chat/completions", json=ASK)
            assert second.status_code == 429 and second.headers["retry-after"] == "1"
            assert second.json()["error"]["type"] == "rate_limit_error"
            assert b"[DONE]" in b"".join([chunk async for chunk in chunks])
        third = await http.post("/chat/completions", json=ASK)
    assert third.status_code == 200


async def test_models_health_and_prometheus_metrics(live_transformers):
    async with httpx.AsyncClient(base_url=live_transformers.url.removesuffix("/v1"), timeout=60) as http:
        await http.post("/v1/chat/completions", json=ASK)
        models = (await http.get("/v1/models")).json()
        health = (await http.get("/health")).json()
        metrics = (await http.get("/metrics")).text
    assert [m["id"] for m in models["data"]] == [MODEL] and models["data"][0]["template"] == "instruct"
    assert health["status"] == "ok"
    for name in [
        'research_requests_total{endpoint="/v1/chat/completions",status="200"}',
        "research_searches_total",
        "research_generation_tokens_total",
        "research_retrieval_seconds_bucket",
        "research_generation_seconds_count",
    ]:
        assert name in metrics
    searches = next(line for line in metrics.splitlines() if line.startswith("research_searches_total"))
    assert float(searches.split()[-1]) >= 1


async def test_text_completions_run_the_same_loop_on_a_raw_prompt(live_transformers, tokenizer):
    client = openai.AsyncOpenAI(base_url=live_transformers.url, api_key="unused")
    prompt = render_prompt(SCRIPT_QUESTION, "instruct", tokenizer)
    reply = await client.completions.create(model=MODEL, prompt=prompt, temperature=0, max_tokens=512)
    choice = reply.choices[0].model_dump()
    assert choice["answer"] == SCRIPT_ANSWER and "<search>" in choice["text"] and "<result>" in choice["text"]
    assert len(choice["searches"]) == 1 and choice["citations"]
    stream = await client.completions.create(model=MODEL, prompt=prompt, temperature=0, max_tokens=512, stream=True)
    chunks = [c.choices[0].model_dump() async for c in stream]
    assert "".join(c["text"] for c in chunks) == choice["text"]
    streamed = [s for c in chunks for s in c.get("searches") or []]
    assert streamed[0] == {"index": 0, "query": "capital of Freedonia"} and streamed[1]["results"]
    await client.close()


async def test_the_retriever_apis_are_mounted_on_the_same_app(live_transformers):
    async with httpx.AsyncClient(base_url=live_transformers.url.removesuffix("/v1"), timeout=60) as http:
        research = (await http.post("/search", json={"query": "capital of Freedonia", "top_n": 2})).json()
        ours = (await http.post("/v1/search", json={"queries": ["capital of Freedonia"], "k": 1})).json()
    assert len(research) == 2 and research[0]["id"] in {"fr-1", "fr-2"}
    assert ours["data"][0]["passages"][0]["title"] == "Freedonia"


async def test_a_client_that_goes_away_aborts_its_generation(live_transformers, wait_idle):
    """The same long sampled completion, read to the end and then dropped after its first chunk.

    Temperature 2 flattens the scripted model's distribution, so it rarely samples an end token.
    """
    tokens = live_transformers.server.metrics.generation_tokens._value.get
    body = {"model": MODEL, "prompt": "Once upon a time", "max_tokens": 400, "temperature": 2.0, "seed": 0}
    async with httpx.AsyncClient(base_url=live_transformers.url, timeout=120) as http:
        full = (await http.post("/completions", json=body)).json()["usage"]["completion_tokens"]
        before = tokens()
        async with http.stream("POST", "/completions", json={**body, "stream": True}) as response:
            async for _ in response.aiter_raw():
                break
    assert await wait_idle(live_transformers.engine) == 0
    assert full > 300 and tokens() - before < full / 4


async def test_a_failing_retriever_is_a_clear_503_and_a_stream_error(transformers_engine, embedder, tmp_path):
    index = build_index(tmp_path / "doomed", [Passage("1", '"A"\nalpha')], embedder=embedder)
    async with serving(transformers_engine, index) as live:
        shutil.rmtree(tmp_path / "doomed")  # the index disappears under the running server
        async with httpx.AsyncClient(base_url=live.url, timeout=60) as http:
            plain = await http.post("/chat/completions", json=ASK)
            streamed = (await http.post("/chat/completions", json={**ASK, "stream": True})).text
            search = await http.post(live.url.removesuffix("/v1") + "/search", json={"query": "alpha"})
    assert plain.status_code == search.status_code == 503, search.text
    error = plain.json()["error"]
    assert error["code"] == "search_loop_failed" and plain.headers["x-request-id"] in error["message"]
    assert search.json()["error"]["code"] == "retriever_unavailable"
    events = [e for e in streamed.split("\n\n") if e]
    assert events[-1] == "data: [DONE]" and '"search_loop_failed"' in events[-2]
    for body in (plain.text, search.text, streamed):  # the cause (a path, library internals) stays in the log
        assert str(tmp_path) not in body and "doomed" not in body


@pytest.mark.parametrize("n", [8])
async def test_concurrent_requests_are_all_answered(live_transformers, n):
    client = openai.AsyncOpenAI(base_url=live_transformers.url, api_key="unused")
    replies = await asyncio.gather(*(client.chat.completions.create(**ASK) for _ in range(n)))
    assert [r.choices[0].message.model_dump()["answer"] for r in replies] == [SCRIPT_ANSWER] * n
    await client.close()
