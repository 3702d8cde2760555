"""A running retriever as the index: research-index serve speaking Search-R1's, ReSearch's and our API.

The failures are a local stand-in of ours in front of the real service (a middleware
that answers some requests itself): 429 with Retry-After, 5xx, a 4xx, a body that is
not the API's, and nobody listening.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from research.retrieval import BatchingRetriever, RemoteIndex, RetrieverArgs, RetrieverUnavailable
from research.retrieval.service import create_app
from tests.conftest import free_port, start_app, stop
from tests.support.counting import CountingIndex

QUERIES = ["capital of Freedonia", "copper mines"]


def same(got, want) -> bool:
    """The same passages (ids, contents byte for byte), scores equal up to the float noise of other batch sizes."""
    flat = [(p.id, p.contents) for hits in got for p in hits], [(p.id, p.contents) for hits in want for p in hits]
    scores = zip([p.score for h in got for p in h], [p.score for h in want for p in h], strict=True)
    return flat[0] == flat[1] and all(abs(a - b) < 1e-4 for a, b in scores)


@pytest.fixture
async def service(script_index):
    """research-index serve's app over the script index, behind a middleware that fails as ``plan`` says.

    Yields (base URL, plan, request log): ``plan`` is a list of (status, headers, body) the next
    requests get instead of the service's answer; the log has each request's time.
    """
    counting = CountingIndex(script_index)
    plan: list[tuple[int, dict[str, str], object]] = []
    seen: list[float] = []
    app = FastAPI()

    @app.middleware("http")
    async def stand_in(request: Request, call_next):
        seen.append(time.monotonic())
        if plan:
            status, headers, body = plan.pop(0)
            return JSONResponse(body, status_code=status, headers=headers)
        return await call_next(request)

    local = BatchingRetriever(counting)
    app.mount("/", create_app(local))
    uv, task, base = await start_app(app)
    yield base, plan, seen, counting
    await stop(uv, task)
    await local.close()


@pytest.mark.parametrize(
    ("path", "api"), [("/retrieve", "search-r1"), ("/batch_search", "research"), ("/v1/search", "research-serve")]
)
async def test_each_api_answers_as_the_local_index(service, script_index, path, api):
    base, *_ = service
    inferred = RemoteIndex(base + path)  # the API from the URL's path
    named = RemoteIndex(base, api)  # the endpoint from the API
    assert inferred.api == named.api == api and inferred.uri == named.uri == base + path
    want = script_index.search(QUERIES, k=3)
    for remote in (inferred, named):
        got = await asyncio.to_thread(remote.search, QUERIES, k=3)
        assert same(got, want)
        remote.close()


async def test_concurrent_searches_go_out_in_shared_requests(service, script_index):
    base, _, seen, counting = service
    retriever = RetrieverArgs(retriever=base + "/retrieve").open_retriever()
    try:
        found = await asyncio.gather(*(retriever.search([QUERIES[i % 2]], k=2) for i in range(24)))
    finally:
        await retriever.close()
    want = script_index.search(QUERIES, k=2)
    assert same([r.passages[0] for r in found], [want[i % 2] for i in range(24)])
    assert sum(counting.batches) == 24 and len(seen) < 24  # each query searched once, in fewer requests


async def test_transient_failures_are_retried_honouring_retry_after(service, script_index):
    base, plan, seen, _ = service
    plan += [(503, {}, {"error": "warming up"}), (429, {"Retry-After": "1"}, {"error": "slow down"})]
    remote = RemoteIndex(base + "/retrieve")
    got = await asyncio.to_thread(remote.search, QUERIES, k=2)
    assert same(got, script_index.search(QUERIES, k=2)) and plan == [] and len(seen) == 3
    assert seen[2] - seen[1] >= 0.9  # waited as the 429 asked, not the backoff's 0.5 s or so
    remote.close()


@pytest.mark.parametrize(
    ("failure", "error", "message", "requests"),
    [
        ((400, {}, {"detail": "topk too large"}), RetrieverUnavailable, "refused the search (HTTP 400): ", 1),
        ((200, {}, {"not": "the api"}), RetrieverUnavailable, "answered with a body that is not the search-r1", 1),
        ((200, {}, {"result": [[]]}), RetrieverUnavailable, "answered 1 of 2 queries", 1),
        ((500, {}, {"error": "boom"}), RetrieverUnavailable, "is unavailable (HTTP 500)", 2),
    ],
    ids=["4xx-not-retried", "malformed", "too-few", "5xx-after-retries"],
)
async def test_failures_name_the_retriever(service, failure, error, message, requests):
    base, plan, seen, _ = service
    plan += [failure] * 2
    remote = RemoteIndex(base + "/retrieve", attempts=2)
    with pytest.raises(error, match=f"the retriever at {base}/retrieve .*") as caught:
        await asyncio.to_thread(remote.search, QUERIES, k=2)
    assert message in str(caught.value) and len(seen) == requests
    remote.close()


def test_a_retriever_nobody_listens_on_is_unreachable():
    url = f"http://127.0.0.1:{free_port()}/retrieve"
    remote = RemoteIndex(url, attempts=1)
    with pytest.raises(RetrieverUnavailable, match=f"the retriever at {url} is unreachable"):
        remote.search(QUERIES, k=2)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"retriever": "http://h:8000/"}, "cannot tell which API http://h:8000/ speaks"),
        ({"retriever": "http://h/retrieve", "index": "./wiki18"}, "give one of --index, --retriever and --web-search"),
        ({"retriever_api": "search-r1"}, "--retriever-api goes with --retriever"),
        ({}, "give --index PATH_OR_URI, --retriever URL or --web-search PROVIDER"),
    ],
)
def test_the_retriever_flags_refuse_what_cannot_work(args, message):
    with pytest.raises(ValueError, match=message):
        RetrieverArgs(**args).open_retriever()


def test_a_search_mode_needs_a_retriever_that_has_it():
    with pytest.raises(ValueError, match="ranks its own way: search_mode 'hybrid'"):
        RemoteIndex("http://h/retrieve").search(QUERIES, k=2, mode="hybrid")


def test_serve_eval_and_train_name_the_retriever_the_same_way():
    from research.cli import from_args
    from research.evaluation.cli import parser as eval_parser
    from research.server.cli import parser as serve_parser
    from research.train.cli import parser as train_parser

    flags = ["--retriever", "http://gpu:8000/retrieve"]
    serve = serve_parser().parse_args(["--model", "m", *flags])
    evaluate = eval_parser().parse_args(["--model", "m", "--out", "o", "--dataset", "bamboogle", *flags])
    train, _ = train_parser().parse_args_and_config([*flags, "--retriever-api", "search-r1"])
    chosen = [from_args(RetrieverArgs, serve), from_args(RetrieverArgs, evaluate), train.retriever_args()]
    assert {c.source for c in chosen} == {"the search-r1 retriever at http://gpu:8000/retrieve"}
