"""Bad input gets a 4xx in OpenAI's error shape, with a message that says what to fix; the server keeps serving."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from research.protocol import render_base_conversation, render_prompt
from tests.conftest import serving

MODEL = "scripted"
GOOD = {"model": MODEL, "messages": [{"role": "user", "content": "What is the capital of Freedonia?"}]}

BAD = [
    pytest.param(b'{"model": "scripted", "messages": [', 400, None, "not valid JSON", id="malformed-json"),
    pytest.param({**GOOD, "messages": "hi"}, 400, "messages", "valid list", id="messages-not-a-list"),
    pytest.param({**GOOD, "temperature": "hot"}, 400, "temperature", "valid number", id="temperature-a-string"),
    pytest.param({**GOOD, "model": "gpt-4"}, 404, "model", "does not exist", id="unknown-model"),
    pytest.param({**GOOD, "messages": []}, 400, "messages", "at least 1", id="empty-messages"),
    pytest.param(
        {**GOOD, "messages": [{"role": "system", "content": "hi"}]}, 400, "messages", "user message",
        id="no-user-message",
    ),
    pytest.param(
        {**GOOD, "messages": [*GOOD["messages"], {"role": "assistant", "content": "x"}]}, 400, "messages.1.role",
        "last message must be the user's question", id="assistant-last",
    ),
    pytest.param({**GOOD, "max_tokens": 10**9}, 400, "max_tokens", "limit of 8192", id="huge-max-tokens"),
    pytest.param({**GOOD, "max_tokens": 0}, 400, "max_tokens", "greater than or equal to 1", id="zero-max-tokens"),
    pytest.param({**GOOD, "search_top_k": 0}, 400, "search_top_k", "greater than or equal to 1", id="zero-top-k"),
    pytest.param({**GOOD, "search_top_k": -2}, 400, "search_top_k", "greater than or equal to 1", id="neg-top-k"),
    pytest.param({**GOOD, "top_k": -3}, 400, "top_k", "-1 or 0", id="sampling-top-k-3"),
    pytest.param({**GOOD, "n": 17}, 400, "n", "limit of 16", id="n-over-max"),
    pytest.param({**GOOD, "max_searches": 9}, 400, "max_searches", "limit of 4", id="too-many-searches"),
    pytest.param({**GOOD, "search_mode": "magic"}, 400, "search_mode", "vector", id="unknown-search-mode"),
    pytest.param({**GOOD, "stop": list("abcde")}, 400, "stop", "at most 4 strings", id="five-stops"),
    pytest.param({**GOOD, "stop": "x" * 300}, 400, "stop", "1 to 256 characters", id="long-stop"),
    pytest.param({**GOOD, "tools": [{"type": "function"}]}, 400, "tools", "search tool itself", id="tools"),
    pytest.param({**GOOD, "logprobs": True, "top_logprobs": 21}, 400, "top_logprobs", "less than or equal to 20",
                 id="top-logprobs-21"),
    pytest.param(
        {**GOOD, "response_format": {"type": "json_object"}}, 400, "response_format", "only text", id="json-format"
    ),
    pytest.param({**GOOD, "frobnicate": 1}, 400, "frobnicate", "unrecognized request argument", id="unknown-field"),
    pytest.param({**GOOD, "seed": 2**64}, 400, "seed", "less than", id="seed-over-64-bits"),
    pytest.param({**GOOD, "top_k": 10**30}, 400, "top_k", "less than", id="huge-sampling-top-k"),
    pytest.param({**GOOD, "repetition_penalty": 1e300}, 400, "repetition_penalty", "less than", id="huge-penalty"),
    pytest.param(
        {**GOOD, "messages": [{"role": "user", "content": "\ud800"}]}, 400, "messages.0.content", "not valid Unicode",
        id="lone-surrogate",
    ),
    pytest.param(
        {**GOOD, "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
        400, "messages.0.content", None, id="image-content",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("body", "status", "param", "message"), BAD)
async def test_bad_requests_get_a_clear_openai_error(live_transformers, body, status, param, message):
    async with httpx.AsyncClient(base_url=live_transformers.url, timeout=60) as http:
        content = body if isinstance(body, bytes) else json.dumps(body)  # json.dumps escapes lone surrogates
        response = await http.post("/chat/completions", content=content, headers={"content-type": "application/json"})
        assert response.status_code == status, response.text
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert error["type"] == ("not_found_error" if status == 404 else "invalid_request_error")
        if param is not None:
            assert error["param"] == param or error["param"].startswith(param)
        if message is not None:
            assert message in error["message"]
        # ... and the server keeps serving.
        ok = await http.post("/chat/completions", json={**GOOD, "temperature": 0})
        assert ok.status_code == 200 and ok.json()["choices"][0]["message"]["answer"] == "Marxville"


async def test_the_sdk_raises_its_own_typed_errors(live_transformers):
    client = openai.AsyncOpenAI(base_url=live_transformers.url, api_key="unused")
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        await client.chat.completions.create(model="nope", messages=GOOD["messages"])
    with pytest.raises(openai.BadRequestError, match="search_top_k"):
        await client.chat.completions.create(**GOOD, extra_body={"search_top_k": 0})
    await client.close()


async def test_a_base_model_sees_the_whole_conversation_in_its_template(transformers_engine, script_index, tokenizer):
    async with serving(transformers_engine, script_index) as live:
        live.server.config.template = "base"
        async with httpx.AsyncClient(base_url=live.url, timeout=60) as http:
            turns = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello?"},
                     {"role": "assistant", "content": "Hi."}, *GOOD["messages"]]  # fmt: skip
            response = await http.post("/chat/completions", json={**GOOD, "messages": turns, "max_tokens": 8})
            alone = await http.post("/chat/completions", json={**GOOD, "max_tokens": 8})
    assert response.status_code == alone.status_code == 200
    rendered = render_base_conversation([(t["role"], t["content"]) for t in turns])
    assert "Be brief. User: Hello?. Assistant: Hi. User: " in rendered  # every turn, none dropped
    assert response.json()["usage"]["prompt_tokens"] == len(tokenizer.encode(rendered, add_special_tokens=False))
    question = GOOD["messages"][-1]["content"]  # a lone question: the prompt the checkpoints were trained on
    assert alone.json()["usage"]["prompt_tokens"] == len(tokenizer.encode(render_prompt(question, "base")))


@pytest.mark.parametrize("route", ["/search", "/batch_search", "/retrieve", "/v1/search"])
@pytest.mark.parametrize("query", ["", "   ", "\ud800"])
async def test_the_retriever_routes_reject_empty_and_broken_queries(live_transformers, route, query):
    body = {"/search": {"query": query}, "/batch_search": {"query": [query]}}.get(route, {"queries": [query]})
    async with httpx.AsyncClient(base_url=live_transformers.url.removesuffix("/v1"), timeout=60) as http:
        reply = await http.post(route, content=json.dumps(body), headers={"content-type": "application/json"})
    error = reply.json()["error"]
    assert reply.status_code == 400 and error["param"].startswith(("query", "queries")), error
    assert ("not valid Unicode" if query.strip() else "cannot be empty") in error["message"]


@pytest.mark.parametrize(
    "passage_id",
    ["a%0D%0AX-Injected:%201", "a%0Ab", "a%00b", "x" * 5000, "no-such-passage", "%27%20OR%20%271%27=%271"],
    ids=["crlf", "lf", "nul", "over-the-limit", "unknown", "sql-like"],
)
async def test_every_unknown_or_malformed_passage_id_gets_the_same_404(live_transformers, passage_id):
    async with httpx.AsyncClient(base_url=live_transformers.url, timeout=30) as http:
        missing = await http.get(f"/passages/{passage_id}")
        assert missing.status_code == 404 and "x-injected" not in missing.headers
        error = missing.json()["error"]
        assert error["code"] == "passage_not_found" and error["param"] == "id"
        assert error["message"].startswith("no passage has the id ")
        assert (await http.get("/passages/fr-1")).status_code == 200  # the next lookup is answered
