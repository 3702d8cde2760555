"""research-serve searching a running retriever (here research-index serve, as Search-R1's /retrieve) instead of
its own index: the same answer; the retriever down is a 503 and an unhealthy /health, both naming it."""

from __future__ import annotations

import httpx
import openai
import pytest

from research.retrieval import BatchingRetriever, RemoteIndex
from research.retrieval.service import create_app
from research.testbed.processes import start_app, stop
from tests.conftest import serving
from tests.support.scripted import SCRIPT_ANSWER, SCRIPT_QUERY, SCRIPT_QUESTION

MODEL = "scripted"


async def test_a_running_retriever_answers_as_the_local_index_and_its_outage_is_named(
    transformers_engine, script_index
):
    local = BatchingRetriever(script_index)
    uv, task, base = await start_app(create_app(local))
    remote = RemoteIndex(f"{base}/retrieve", attempts=1)
    messages = [{"role": "user", "content": SCRIPT_QUESTION}]
    async with serving(transformers_engine, remote) as live:
        client = openai.AsyncOpenAI(base_url=live.url, api_key="unused", max_retries=0)
        http = httpx.AsyncClient(timeout=60)
        try:
            reply = await client.chat.completions.create(model=MODEL, messages=messages, temperature=0)
            fields = reply.choices[0].message.model_extra
            [search] = fields["searches"]
            assert fields["answer"] == SCRIPT_ANSWER and search["query"] == SCRIPT_QUERY
            assert [r["id"] for r in search["results"]] == [p.id for p in script_index.search([SCRIPT_QUERY])[0]]
            health = live.url.removesuffix("/v1") + "/health"
            assert (await http.get(health)).json()["status"] == "ok"
            by_id = await http.get(f"{live.url}/passages/fr-1")  # Search-R1's API has no lookup by id
            assert by_id.status_code == 501 and by_id.json()["error"]["code"] == "fetch_unsupported"

            await stop(uv, task)  # the retriever goes down
            with pytest.raises(openai.InternalServerError) as down:
                await client.chat.completions.create(model=MODEL, messages=messages, temperature=0)
            error = down.value.body
            assert down.value.status_code == 503 and error["code"] == "retriever_unavailable"
            assert f"the retriever at {base}/retrieve is unreachable" in error["message"]
            unhealthy = await http.get(health)
            assert unhealthy.status_code == 503 and f"{base}/retrieve is unreachable" in unhealthy.json()["retriever"]
        finally:
            await client.close()
            await http.aclose()
            remote.close()
            await local.close()
