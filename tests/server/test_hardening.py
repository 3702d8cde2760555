"""Hardening (issue 18): no request can stall, leak or crash the server.

Each test reproduces a way one request used to take the server down or wedge it, and
shows it fixed. The admission tests drive the ASGI app directly, as a server would,
and leave at every step: before the body, after it, at each write, or by no longer
reading; whatever the step, no slot stays taken and the engine ends idle.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from contextlib import suppress

import httpx
import pytest
from starlette.requests import ClientDisconnect

from research.engines.hf import TransformersEngine
from research.retrieval import BatchingRetriever
from research.server.app import Server, ServerConfig, create_app
from tests.conftest import serving
from tests.support.scripted import SCRIPT_QUESTION

MODEL = "scripted"
ASK = {"model": MODEL, "messages": [{"role": "user", "content": SCRIPT_QUESTION}], "temperature": 0}
GOOD = {"model": MODEL, "messages": [{"role": "user", "content": "What is the capital of Freedonia?"}]}


# -- limits at the edge ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "param"),
    [({"prompt": [10**9]}, "prompt"), ({"prompt": [-1, 5]}, "prompt"), ({"prompt": "\udfff"}, "prompt")],
)
async def test_completions_check_token_ids_and_text_before_the_engine(live_vllm, body, param):
    """Bad input never reaches vLLM: nothing stays registered there (it used to leak a request each)."""
    engine = live_vllm.engine.engine
    headers = {"content-type": "application/json"}
    async with httpx.AsyncClient(base_url=live_vllm.url, timeout=60, headers=headers) as http:
        for _ in range(3):
            reply = await http.post("/completions", content=json.dumps({"model": MODEL, "max_tokens": 4, **body}))
            assert reply.status_code == 400 and reply.json()["error"]["param"] == param, reply.text
        for extra in ({"seed": 2**64}, {"top_k": 10**30}):
            assert (await http.post("/chat/completions", json={**GOOD, **extra})).status_code == 400
    assert engine.output_processor.get_num_unfinished_requests() == 0


async def test_a_body_over_the_limit_is_a_413_before_it_is_read_and_the_server_keeps_serving(
    transformers_engine, script_index
):
    """A declared Content-Length over the limit is refused at once; a chunked body at the first byte past it."""
    big = json.dumps({**GOOD, "messages": [{"role": "user", "content": "x" * 200_000}]}).encode()

    async def chunked():
        for i in range(0, len(big), 16_384):
            yield big[i : i + 16_384]

    async with (
        serving(transformers_engine, script_index, max_request_bytes=100_000) as live,
        httpx.AsyncClient(base_url=live.url, timeout=60, headers={"content-type": "application/json"}) as http,
    ):
        declared = await http.post("/chat/completions", content=big)
        streamed = await http.post("/chat/completions", content=chunked())
        ok = await http.post("/chat/completions", json={**GOOD, "temperature": 0})
    for reply in (declared, streamed):
        error = reply.json()["error"]
        assert reply.status_code == 413 and error["code"] == "request_too_large" and "100000 bytes" in error["message"]
    assert ok.status_code == 200


async def test_too_many_messages_is_a_400(live_transformers):
    many = {**GOOD, "messages": [{"role": "user", "content": "q"}] * 1025}
    async with httpx.AsyncClient(base_url=live_transformers.url, timeout=60) as http:
        reply = await http.post("/chat/completions", json=many)
    assert reply.status_code == 400 and reply.json()["error"]["param"] == "messages"


async def test_a_stalled_index_fails_the_request_in_time_and_the_server_stays_responsive(
    transformers_engine, script_index, monkeypatch
):
    """An index read that hangs (as on a stuck NFS or S3 mount) is cut at --search-timeout: 504, or an error event."""
    search = script_index.search

    def stalled(*args, **kwargs):
        time.sleep(2.0)
        return search(*args, **kwargs)

    monkeypatch.setattr(script_index, "search", stalled)
    async with (
        serving(transformers_engine, script_index, search_timeout=0.2) as live,
        httpx.AsyncClient(base_url=live.url, timeout=60) as http,
    ):
        plain = await http.post("/chat/completions", json=ASK)
        streamed = (await http.post("/chat/completions", json={**ASK, "stream": True})).text
        health = await http.get(live.url.removesuffix("/v1") + "/health")
        monkeypatch.setattr(script_index, "search", search)  # the mount recovers
        for _ in range(100):  # the stalled reads still hold workers for a moment; a loaded machine is slow
            recovered = await http.get(live.url.removesuffix("/v1") + "/health")
            if recovered.status_code == 200:
                break
            await asyncio.sleep(0.2)
    assert plain.status_code == 504 and plain.json()["error"]["code"] == "search_timeout"
    assert "did not answer within 0.2 s" in plain.json()["error"]["message"]
    events = [e for e in streamed.split("\n\n") if e]
    assert events[-1] == "data: [DONE]" and '"search_timeout"' in events[-2]
    assert health.status_code == 503 and health.json()["status"] == "unhealthy"
    assert health.json()["retriever"] == "the passage index did not answer within 0.2 s"
    assert recovered.status_code == 200 and recovered.json() == {"status": "ok", "model": MODEL, "running": 0}


async def test_tokenising_a_huge_prompt_does_not_stall_other_requests(live_transformers):
    """A 3 MB message is rendered and tokenised on a thread: /health answers while it runs (it used to wait ~40 s)."""
    huge = {**GOOD, "messages": [{"role": "user", "content": "lorem ipsum " * 250_000}]}
    root = live_transformers.url.removesuffix("/v1")
    async with httpx.AsyncClient(timeout=120) as http:
        big = asyncio.create_task(http.post(f"{root}/v1/chat/completions", json=huge))
        await asyncio.sleep(0.3)  # the big body is in, its tokenisation under way
        health = await http.get(f"{root}/health")
        assert not big.done(), "tokenising 3 MB took under 0.3 s: the test no longer shows anything"
        reply = await big
    assert health.status_code == 200
    assert reply.status_code == 400 and reply.json()["error"]["code"] == "context_length_exceeded"


async def test_an_unexpected_failure_is_an_openai_500_without_internals(live_transformers, monkeypatch):
    def broken(model: str) -> None:
        raise RuntimeError("/srv/secret/index.lance exploded")

    monkeypatch.setattr(live_transformers.server, "check_model", broken)
    async with httpx.AsyncClient(base_url=live_transformers.url, timeout=60) as http:
        reply = await http.post("/chat/completions", json=GOOD)
    assert reply.status_code == 500 and reply.json()["error"]["type"] == "internal_error"
    assert "secret" not in reply.text


# -- retrieval: timeouts, several workers, health ---------------------------------------


async def test_one_stuck_index_read_does_not_hold_up_the_others(script_index, monkeypatch):
    """A read that hangs (a stuck mount) takes one worker; searches keep being served by the rest."""
    search, unstuck = script_index.search, threading.Event()

    def sometimes_stuck(queries, **kwargs):
        if "stuck" in queries:
            unstuck.wait(30)
        return search(queries, **kwargs)

    monkeypatch.setattr(script_index, "search", sometimes_stuck)
    retriever = BatchingRetriever(script_index, workers=2)
    stuck = asyncio.create_task(retriever.search(["stuck"], k=1))
    await asyncio.sleep(0.1)
    served = await asyncio.wait_for(retriever.search(["Freedonia capital"], k=1), 30)
    assert served.passages[0][0].id in {"fr-1", "fr-2"} and not stuck.done()
    unstuck.set()
    assert len((await stuck).passages[0]) == 1
    await retriever.close()


async def test_a_full_search_queue_is_a_429_at_admission_and_queued_searches_wait_their_turn(
    transformers_engine, script_index, monkeypatch
):
    """Every reader stuck and one search in line (--max-search-queue 1): a new request is refused before it runs."""
    search, released = script_index.search, threading.Event()

    def stuck(queries, **kwargs):
        released.wait(60)
        return search(queries, **kwargs)

    monkeypatch.setattr(script_index, "search", stuck)
    async with (
        serving(transformers_engine, script_index, max_search_queue=1, search_timeout=60) as live,
        httpx.AsyncClient(base_url=live.url, timeout=120) as http,
    ):
        retriever, reads = live.server.retriever, []
        async with asyncio.timeout(120):
            for i in range(retriever.workers):  # one at a time, so that each takes a reader of its own: all stuck
                reads.append(asyncio.create_task(retriever.search([f"read {i}"], k=1)))
                await asyncio.sleep(0.05)
                while retriever.waiting:
                    await asyncio.sleep(0.05)
            in_line = asyncio.create_task(http.post("/chat/completions", json=ASK))  # its search waits in line
            while retriever.waiting < 1:
                await asyncio.sleep(0.05)
        refused = await http.post("/chat/completions", json=ASK)
        released.set()
        answered = await in_line
        await asyncio.gather(*reads)
    assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
    assert refused.json()["error"]["message"] == "1 searches are waiting for the index (the limit is 1); retry"
    assert answered.status_code == 200 and answered.json()["choices"][0]["message"]["answer"] == "Marxville"


async def test_health_names_a_dead_engine(model_path, script_index):
    engine = TransformersEngine.from_pretrained(str(model_path))
    await engine.close()
    async with serving(engine, script_index) as live, httpx.AsyncClient(timeout=60) as http:
        health = await http.get(live.url.removesuffix("/v1") + "/health")
    assert health.status_code == 503
    assert health.json()["engine"] == "the engine failed its health check (RuntimeError)"


# -- admission: a slot is freed however the request ends ------------------------------------


def _scope(path: str, body: bytes, spec: str) -> dict:
    return {
        "type": "http", "asgi": {"version": "3.0", "spec_version": spec}, "http_version": "1.1",
        "method": "POST", "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
        "root_path": "", "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000),
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
    }  # fmt: skip


async def drive(app, path: str, body: dict, *, leave: str, at: int, spec: str = "2.3") -> list[dict]:
    """Call ``app`` as an ASGI server would, for a client that leaves at step ``at``.

    ``leave``: "receive" (the ``at``-th receive reports a disconnect), "send" (the ``at``-th
    send fails, as an ASGI 2.4 server's does once the client is gone) or "stall" (the
    ``at``-th send never completes: a client that stopped reading). Returns what was sent.
    """
    raw, received, sent = json.dumps(body).encode(), 0, []
    never = asyncio.Event()

    async def receive() -> dict:
        nonlocal received
        received += 1
        if leave == "receive" and received > at:
            return {"type": "http.disconnect"}
        if received == 1:
            return {"type": "http.request", "body": raw, "more_body": False}
        await never.wait()  # the client stays until the response ends
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        if len(sent) == at and leave == "send":
            raise OSError("connection reset by peer")
        if len(sent) == at and leave == "stall":
            await never.wait()
        sent.append(message)

    with suppress(OSError, ClientDisconnect):
        await asyncio.wait_for(app(_scope(path, raw, spec), receive, send), 120)
    return sent


STREAM = {**ASK, "stream": True}
LEAVING = [
    *(pytest.param("receive", at, STREAM, id=f"stream-disconnect-at-receive-{at}") for at in (0, 1)),
    *(pytest.param("send", at, STREAM, id=f"stream-send-fails-at-{at}") for at in (0, 1, 4, 12)),
    *(pytest.param("stall", at, STREAM, id=f"stream-reader-stalls-at-{at}") for at in (1, 6)),
    *(pytest.param("receive", at, ASK, id=f"reply-disconnect-at-receive-{at}") for at in (0, 1)),
    pytest.param("send", 0, ASK, id="reply-send-fails"),
    # n = 8: eight search loops, every one cancelled
    *(pytest.param("send", at, {**STREAM, "n": 8}, id=f"n8-stream-send-fails-at-{at}") for at in (4, 12)),
    pytest.param("stall", 6, {**STREAM, "n": 8}, id="n8-stream-reader-stalls-at-6"),
    pytest.param("receive", 1, {**ASK, "n": 8}, id="n8-reply-disconnect-at-receive-1"),
]


@pytest.mark.parametrize("spec", ["2.3", "2.4"])
@pytest.mark.parametrize(("leave", "at", "body"), LEAVING)
async def test_a_client_leaving_at_any_step_frees_its_slot_and_the_engine(
    transformers_engine, script_index, wait_idle, leave, at, body, spec
):
    retriever = BatchingRetriever(script_index)
    config = ServerConfig(model_name=MODEL, template="instruct", max_concurrent_requests=1, stream_write_timeout=0.5)
    server = Server(transformers_engine, retriever, config)
    app = create_app(server)
    sent = await drive(app, "/v1/chat/completions", body, leave=leave, at=at, spec=spec)
    assert server.running == 0 and server.metrics.running._value.get() == 0
    assert await wait_idle(transformers_engine) == 0
    if leave != "receive" and at > 0:  # the response had started
        assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 200
    # The one slot is free: the next request is served in full.
    done = await drive(app, "/v1/chat/completions", ASK, leave="receive", at=99)
    assert done[0]["status"] == 200 and json.loads(done[1]["body"])["choices"][0]["message"]["answer"]
    await retriever.close()


async def test_a_dropped_reply_is_a_499_in_metrics_not_a_503(transformers_engine, script_index):
    retriever = BatchingRetriever(script_index)
    server = Server(transformers_engine, retriever, ServerConfig(model_name=MODEL, template="instruct"))
    await drive(create_app(server), "/v1/chat/completions", ASK, leave="receive", at=1)
    samples = server.metrics.requests.collect()[0].samples
    assert {s.labels["status"] for s in samples if s.name.endswith("_total")} == {"499"}
    await retriever.close()
