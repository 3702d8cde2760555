"""research-serve in front of a retriever that misbehaves in every way a remote one can (issue #49).

The retriever is a small HTTP server of the test's own speaking Search-R1's ``/retrieve``;
what it answers is set per case: NaN scores, a lone surrogate in a passage, 100,000 passages
in a reply of tens of MB, 401, HTML with status 200, truncated JSON, a 503 with
``Retry-After``. research-serve is the real one (uvicorn on loopback, the scripted model on
the transformers engine) with ``--retriever`` pointing there, driven by the ``openai`` SDK,
plain HTTP and the ``mcp`` SDK. Each case checks the status and error code on every route that
searches, that the server answers a normal request afterwards, and that no engine slot is held.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field

import httpx
import openai
import pytest
from mcp import Client
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from research.protocol import render_prompt
from research.retrieval import RemoteIndex
from research.testbed.processes import start_app, stop
from tests.conftest import MODEL, serving
from tests.support.scripted import SCRIPT_ANSWER, SCRIPT_CORPUS, SCRIPT_QUESTION

ASK = [{"role": "user", "content": SCRIPT_QUESTION}]
PASSAGES = [{"id": p["id"], "contents": p["contents"]} for p in SCRIPT_CORPUS]


def reply(passages: list[dict], scores: list[float]) -> bytes:
    """Search-R1's reply for one query, written by Python's json (which writes NaN, and escapes a surrogate)."""
    row = [{"document": p, "score": s} for p, s in zip(passages, scores, strict=True)]
    return json.dumps({"result": [row]}).encode()


@dataclass
class Retriever:
    """What the test's retriever answers next: ``(status, headers, body)``, or a huge streamed reply."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    huge: bool = False
    """Stream 100,000 passages (~56 MB), holding after the first ~0.5 MB until ``resume`` is set."""
    holding: asyncio.Event = field(default_factory=asyncio.Event)
    resume: asyncio.Event = field(default_factory=asyncio.Event)

    def good(self) -> None:
        self.status, self.headers, self.huge = 200, {}, False
        self.body = reply(PASSAGES[:5], [0.9, 0.8, 0.7, 0.6, 0.5])

    async def app(self, request: Request) -> Response:
        if not self.huge:
            return Response(self.body, self.status, self.headers, media_type="application/json")

        async def chunks():
            passage = json.dumps({"document": {"id": "x", "contents": '"X"\n' + "word " * 100}, "score": 0.5})
            yield b'{"result": [['
            for i in range(100_000):
                yield (passage + ("," if i < 99_999 else "")).encode()
                if i == 1_000:  # ~0.5 MB out, under the limit: the server is reading it now
                    self.holding.set()
                    await self.resume.wait()
            yield b"]]}"

        return StreamingResponse(chunks(), media_type="application/json")


@pytest.fixture(scope="module")
async def bad():
    """The retriever, its URL (with credentials that must never be shown), and the server searching it."""
    retriever = Retriever()
    retriever.good()
    uv, task, base = await start_app(Starlette(routes=[Route("/retrieve", retriever.app, methods=["POST"])]))
    yield retriever, base
    await stop(uv, task)


@pytest.fixture(scope="module")
async def live(bad, transformers_engine):
    _, base = bad
    url = base.replace("http://", "http://user:secret@") + "/retrieve"
    remote = RemoteIndex(url, attempts=1, max_bytes=2 * 2**20)
    async with serving(transformers_engine, remote, max_searches=2) as live:
        yield live
    remote.close()


async def healthy_afterwards(live, retriever: Retriever, wait_idle) -> None:
    """The retriever mended, the same server answers a normal chat; no slot or engine request left."""
    retriever.good()
    client = openai.AsyncOpenAI(base_url=live.url, api_key="unused", max_retries=0)
    try:
        answer = await client.chat.completions.create(model=MODEL, messages=ASK, temperature=0)
    finally:
        await client.close()
    assert answer.choices[0].message.model_extra["answer"] == SCRIPT_ANSWER
    assert await wait_idle(live.engine) == 0 and live.server.running == 0


async def everything_that_searches(live, http: httpx.AsyncClient, tokenizer) -> dict[str, httpx.Response]:
    """The answer of every route that searches: chat (whole and streamed), completions, Responses, /v1/search,
    the drop-in /retrieve and /batch_search, and /health."""
    greedy = {"model": MODEL, "temperature": 0}
    prompt = render_prompt(SCRIPT_QUESTION, "instruct", tokenizer)
    chat = {**greedy, "messages": ASK}
    answers = {
        "chat": await http.post("/v1/chat/completions", json=chat),
        "chat stream": await http.post("/v1/chat/completions", json={**chat, "stream": True}),
        "completions": await http.post("/v1/completions", json={**greedy, "prompt": prompt, "max_tokens": 512}),
        "responses": await http.post("/v1/responses", json={**greedy, "input": SCRIPT_QUESTION}),
        "v1/search": await http.post("/v1/search", json={"queries": ["capital of Freedonia"], "k": 2}),
        "retrieve": await http.post("/retrieve", json={"queries": ["capital"], "topk": 2, "return_scores": True}),
        "batch_search": await http.post("/batch_search", json={"query": ["capital"], "top_n": 2, "return_score": 1}),
        "health": await http.get("/health"),
    }
    return answers


def stream_error(response: httpx.Response) -> dict:
    """The error event a stream ends with."""
    events = [json.loads(line[6:]) for line in response.text.splitlines() if line.startswith("data: {")]
    return events[-1]["error"]


@pytest.mark.parametrize(
    ("status", "headers", "body", "why"),
    [
        (401, {}, b'{"detail": "bad key"}', "refused its API key (HTTP 401)"),
        (200, {}, b"<html><body>Just a moment...</body></html>", "answered with a body that is not JSON"),
        (200, {}, reply(PASSAGES[:2], [0.9, 0.8])[:-9], "answered with a body that is not JSON"),
        (
            200,
            {},
            b'{"result": [[{"document": {"title": "no contents"}}]]}',
            "answered with a body that is not the search-r1 API's (result.0.0.document.contents: Field required)",
        ),
        (503, {"Retry-After": "7"}, b"busy", "is unavailable (HTTP 503): busy"),
    ],
    ids=["401", "html", "truncated-json", "wrong-shape", "503-retry-after"],
)
async def test_a_retriever_that_fails_is_named_on_every_route_that_searches(
    bad, live, wait_idle, tokenizer, status, headers, body, why
):
    retriever, base = bad
    retriever.status, retriever.headers, retriever.body = status, headers, body
    named = f"the retriever at {base}/retrieve {why}"
    async with httpx.AsyncClient(base_url=live.url.removesuffix("/v1"), timeout=60) as http:
        answers = await everything_that_searches(live, http, tokenizer)
    for route, answer in answers.items():
        assert answer.status_code == (200 if route == "chat stream" else 503), route
        error = stream_error(answer) if route == "chat stream" else answer.json()
        message = error["retriever"] if route == "health" else error.get("error", error)["message"]
        assert named in message and "secret" not in message, (route, message)
        if route not in ("health", "chat stream"):
            assert answer.json()["error"]["code"] == "retriever_unavailable", route
            assert answer.headers.get("retry-after") == headers.get("Retry-After"), route
    async with Client(live.url.removesuffix("/v1") + "/mcp") as mcp:
        tool = await mcp.call_tool("search", {"query": "capital of Freedonia"})
    assert tool.is_error and named in tool.content[0].text
    await healthy_afterwards(live, retriever, wait_idle)


async def test_nan_scores_and_a_lone_surrogate_never_fail_a_reply(bad, live, wait_idle, tokenizer):
    retriever, _ = bad
    broken = [{**PASSAGES[0], "contents": PASSAGES[0]["contents"] + " \ud800"}, *PASSAGES[1:5]]
    retriever.body = reply(broken, [float("nan"), float("inf"), 0.7, float("-inf"), 0.5])
    async with httpx.AsyncClient(base_url=live.url.removesuffix("/v1"), timeout=60) as http:
        answers = await everything_that_searches(live, http, tokenizer)
    for route, answer in answers.items():
        assert answer.status_code == 200, (route, answer.text)
        assert "NaN" not in answer.text and "Infinity" not in answer.text, route
        answer.content.decode("utf-8")  # strict UTF-8: no lone surrogate written
    [search] = answers["chat"].json()["choices"][0]["message"]["searches"]
    assert [p["score"] for p in search["results"]] == [None, None, 0.7, None, 0.5]
    assert search["results"][0]["contents"].endswith(" \ufffd")
    found = answers["v1/search"].json()["data"][0]["passages"]
    assert found[0]["score"] is None and found[0]["contents"].endswith("\ufffd")
    assert answers["retrieve"].json()["result"][0][0]["score"] is None
    async with Client(live.url.removesuffix("/v1") + "/mcp") as mcp:
        tool = await mcp.call_tool("search", {"query": "capital of Freedonia", "k": 2})
    assert not tool.is_error and tool.structured_content["results"][0]["text"].endswith("\ufffd")
    await healthy_afterwards(live, retriever, wait_idle)


async def test_a_reply_of_100000_passages_is_dropped_at_the_size_limit_while_others_are_served(bad, live, wait_idle):
    retriever, base = bad
    retriever.huge = True
    retriever.holding.clear()
    retriever.resume.clear()
    async with httpx.AsyncClient(base_url=live.url.removesuffix("/v1"), timeout=120) as http:
        chat = asyncio.create_task(
            http.post("/v1/chat/completions", json={"model": MODEL, "messages": ASK, "temperature": 0})
        )
        await retriever.holding.wait()  # the server is reading the huge reply now
        models = await http.get("/v1/models")  # ... and answers another client meanwhile
        assert models.status_code == 200 and not chat.done()
        retriever.resume.set()
        answer = await chat
    assert answer.status_code == 503 and answer.json()["error"]["code"] == "retriever_unavailable"
    assert f"the retriever at {base}/retrieve sent a reply over the limit of {2 * 2**20} bytes" in answer.text
    await healthy_afterwards(live, retriever, wait_idle)


async def test_a_reply_with_more_passages_than_asked_is_cut_to_k(bad, live, wait_idle):
    retriever, _ = bad
    retriever.body = reply(PASSAGES * 40, [0.5] * len(PASSAGES) * 40)  # hundreds of passages for k = 2
    async with httpx.AsyncClient(base_url=live.url, timeout=60) as http:
        found = await http.post("/search", json={"queries": ["capital"], "k": 2})
    assert [p["id"] for p in found.json()["data"][0]["passages"]] == [p["id"] for p in PASSAGES[:2]]
    await healthy_afterwards(live, retriever, wait_idle)
