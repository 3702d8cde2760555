"""Web search as the retriever: SearXNG, Brave, Tavily and Serper, each against a local replay of its API.

The providers cannot be reached from here: :class:`tests.support.web_providers.Replay` speaks
each one's documented request and reply over a real LanceDB search, and misbehaves on demand
(429 with Retry-After, 5xx, a refused key, a slow answer, a body that is not the API's).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from types import SimpleNamespace

import pytest

from research.retrieval import BatchingRetriever, RetrieverArgs, RetrieverUnavailable, WebCache, WebSearch
from research.retrieval import web as web_module
from research.retrieval.web import PageReader
from research.wire import Passage
from tests.conftest import start_app, stop
from tests.support.web_providers import KEY, Failure, Replay

PROVIDERS = ["searxng", "brave", "tavily", "serper"]
QUERIES = ["capital of Freedonia", "copper mines"]


@pytest.fixture
async def replay(script_index):
    replay = Replay(script_index)
    uv, task, replay.base = await start_app(replay.app)
    yield replay
    await stop(uv, task)


def web(replay: Replay, provider: str, **options) -> WebSearch:
    return WebSearch(provider, replay.url(provider), key=None if provider == "searxng" else KEY, **options)


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_each_provider_s_pages_are_passages_with_their_urls(replay, script_index, provider):
    search = web(replay, provider)
    found = await asyncio.to_thread(search.search, QUERIES, k=3)
    for hits, want in zip(found, script_index.search(QUERIES, k=3), strict=True):
        assert [p.contents for p in hits] == [p.contents for p in want]  # the result block the model reads
        assert [p.url for p in hits] == [p.id for p in hits] == [f"{replay.base}/pages/{p.id}" for p in want]
    assert len(replay.calls) == len(QUERIES)  # one call a query
    search.close()


MATRIX = {
    # failure: (what the provider answers, provider calls made, what the caller sees: None = the passages)
    "429 + Retry-After, then an answer": ([Failure(429, {"Retry-After": "1"}, {"error": "rate limited"})], 2, None),
    "503 twice, then an answer": ([Failure(503, body={"error": "busy"})] * 2, 3, None),
    "500 on every try": ([Failure(500, body={"error": "down"})] * 3, 3, "is unavailable \\(HTTP 500\\)"),
    "401 (a bad key)": ([Failure(401, body={"error": "invalid API key"})], 1, "refused its API key"),
    "a body that is not the API's": ([Failure(body={"results": "none", "web": 3, "organic": 5})], 1, "not its API's"),
    "an HTML page": ([Failure(body="<html>Just a moment...</html>")], 1, "answered with a body that is not JSON"),
    "slower than the timeout on every try": ([Failure(delay=1)] * 3, 3, "unreachable \\(ReadTimeout\\)"),
}


@pytest.mark.parametrize("failure", MATRIX)
@pytest.mark.parametrize("provider", PROVIDERS)
async def test_provider_failures_are_retried_or_named(replay, script_index, provider, failure):
    plan, calls, error = MATRIX[failure]
    replay.plan = list(plan)
    slow = failure.startswith("slower")  # only there is the timeout the point: elsewhere a loaded machine's answer
    search = web(replay, provider, timeout=0.3 if slow else 30, attempts=3)  # may take longer than 0.3 s
    try:
        if error is None:
            [hits] = await asyncio.to_thread(search.search, QUERIES[:1], k=2)
            assert [p.contents for p in hits] == [p.contents for p in script_index.search(QUERIES[:1], k=2)[0]]
        else:
            with pytest.raises(RetrieverUnavailable, match=error) as caught:
                await asyncio.to_thread(search.search, QUERIES[:1], k=2)
            assert f"{provider} web search at {replay.url(provider)}" in str(caught.value)  # names the provider
    finally:
        search.close()
    assert len(replay.calls) == calls
    if failure.startswith("429"):
        assert replay.calls[1][1] - replay.calls[0][1] >= 1.0  # waited as Retry-After said


async def test_the_cache_answers_a_repeated_query_without_a_provider_call(replay, tmp_path):
    first = web(replay, "tavily", cache=WebCache(tmp_path / "web.sqlite", ttl=3600))
    found = await asyncio.to_thread(first.search, QUERIES, k=3)
    assert await asyncio.to_thread(first.search, QUERIES, k=3) == found
    first.close()
    assert len(replay.calls) == len(QUERIES)

    again = web(replay, "tavily", cache=WebCache(tmp_path / "web.sqlite", ttl=3600))  # another run, same file
    assert await asyncio.to_thread(again.search, QUERIES, k=3) == found
    assert len(replay.calls) == len(QUERIES)  # nothing asked
    await asyncio.to_thread(again.search, QUERIES[:1], k=2)  # another k is another question
    assert len(replay.calls) == len(QUERIES) + 1
    again.close()

    expired = web(replay, "tavily", cache=WebCache(tmp_path / "web.sqlite", ttl=0))
    assert await asyncio.to_thread(expired.search, QUERIES, k=3) == found
    assert len(replay.calls) == 2 * len(QUERIES) + 1  # past its time to live, asked again
    expired.close()


async def test_a_failed_query_is_not_cached(replay, tmp_path):
    replay.plan = [Failure(401, body={"error": "invalid API key"})]
    search = web(replay, "serper", cache=WebCache(tmp_path / "web.sqlite", ttl=3600))
    with pytest.raises(RetrieverUnavailable):
        await asyncio.to_thread(search.search, QUERIES[:1], k=2)
    assert len((await asyncio.to_thread(search.search, QUERIES[:1], k=2))[0]) == 2
    assert len(replay.calls) == 2
    search.close()


async def test_provider_calls_are_bounded_and_concurrent_searches_share_the_front(replay):
    replay.delay = 0.2
    retriever = BatchingRetriever(web(replay, "brave", concurrency=2), workers=4)
    try:
        found = await asyncio.gather(*(retriever.search([f"{QUERIES[i % 2]} {i}"], k=1) for i in range(8)))
    finally:
        await retriever.close()
    assert all(len(r.passages[0]) == 1 for r in found) and len(replay.calls) == 8
    assert replay.most_in_flight <= 2


async def test_fetched_pages_give_their_main_text_within_bounds(replay, script_index):
    replay.short_snippets = True
    snippets = web(replay, "tavily")
    pages = web(replay, "tavily", pages=PageReader())
    want = script_index.search(QUERIES, k=2)
    short = await asyncio.to_thread(snippets.search, QUERIES, k=2)
    full = await asyncio.to_thread(pages.search, QUERIES, k=2)
    for s, f, w in zip(short, full, want, strict=True):
        assert [len(p.text.split()) for p in s] == [3, 3]  # the provider's snippet
        assert [p.contents for p in f] == [p.contents for p in w]  # the page's article, not its menu or footer
    snippets.close()
    pages.close()

    reader = PageReader(timeout=1.0, max_bytes=64 * 1024, words=50)
    assert reader.read(replay.base + "/pages/slow") is None  # past its time: the snippet stands
    endless = await asyncio.to_thread(reader.read, replay.base + "/pages/endless")
    assert endless is not None and len(endless.split()) == 50  # stopped reading at 64 KiB
    assert reader.read(replay.base + "/pages/no-such-page-404") is None
    reader.close()


def test_the_flags_are_checked_before_anything_starts(monkeypatch, tmp_path):
    monkeypatch.setenv("RESEARCH_CACHE", str(tmp_path))
    for name in ("BRAVE_API_KEY", "BRAVE_SEARCH_API_KEY", "TAVILY_API_KEY", "SERPER_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    cases = {
        "needs an API key in $TAVILY_API_KEY": {"web_search": "tavily"},
        "needs an API key in $BRAVE_API_KEY or $BRAVE_SEARCH_API_KEY": {"web_search": "brave"},
        "self-hosted: give its URL with --web-search-url": {"web_search": "searxng"},
        "give one of --index, --retriever and --web-search": {"web_search": "serper", "index": "x"},
        "--web-search-url and --web-fetch-pages go with --web-search": {"index": "x", "web_fetch_pages": True},
        "--web-cache-ttl must be at least 0, got -1": {"web_search": "searxng", "web_cache_ttl": -1},
        "--web-concurrency must be at least 1, got 0": {"web_search": "searxng", "web_concurrency": 0},
    }
    for message, fields in cases.items():
        with pytest.raises(ValueError, match=message.replace("$", r"\$")):
            RetrieverArgs(**fields)
    monkeypatch.setenv("BRAVE_SEARCH_API_KEY", "k")
    assert RetrieverArgs(web_search="brave").web().key == "k"  # the other name Brave's key goes by


def test_the_cache_file_is_shared_safely(tmp_path):
    """Two processes' worth of writers on one file (a server and an evaluation): every row lands whole."""
    from research.wire import Passage

    caches = [WebCache(tmp_path / "web.sqlite", ttl=60) for _ in range(2)]
    rows = {f"q{i}": [Passage(f"u{i}", f'"T{i}"\ntext {i}', 0.5, f"u{i}")] for i in range(50)}
    for i, (key, passages) in enumerate(rows.items()):
        caches[i % 2].put(json.dumps(key), passages)
    assert all(caches[1].get(json.dumps(key)) == passages for key, passages in rows.items())
    for cache in caches:
        cache.close()


@pytest.fixture
def clock(monkeypatch):
    """The web cache's clock, one second a tick (so that last use orders rows exactly)."""
    now = [1_000_000.0]

    def tick() -> float:
        now[0] += 1
        return now[0]

    monkeypatch.setattr(web_module, "time", SimpleNamespace(time=tick, monotonic=time.monotonic))
    return now


PAGE = [Passage("https://a.example/", '"A page"\n' + "word " * 200, 0.5, "https://a.example/")]
"""A result of about 1 KB stored."""


def test_the_cache_keeps_the_most_recently_used_within_its_bound(tmp_path, clock):
    cache = WebCache(tmp_path / "web.sqlite", ttl=10**9, max_bytes=100_000)  # ~50 of the 80 rows
    for i in range(40):
        cache.put(f"q{i}", PAGE)
    assert cache.get("q0") == PAGE  # read: now the most recently used
    for i in range(40, 80):
        cache.put(f"q{i}", PAGE)
    cache.prune()
    assert cache.disk_bytes() <= 100_000 and 40 < len(cache) < 80
    assert all(cache.get(f"q{i}") == PAGE for i in (0, 40, 79))  # q0 was read after q39 was written
    assert cache.get("q1") is None and cache.get("q20") is None  # the least recently used went
    cache.close()


def test_expired_rows_are_deleted_and_the_file_shrinks(tmp_path, clock):
    path = tmp_path / "web.sqlite"
    cache = WebCache(path, ttl=10_000, max_bytes=10**9)
    for i in range(2000):
        cache.put(f"q{i}", PAGE)
    big = path.stat().st_size
    assert big > 2_000_000
    clock[0] += 20_000  # all expired
    cache.put("fresh", PAGE)
    cache.prune()
    assert cache.get("fresh") == PAGE and cache.get("q1999") is None
    assert len(cache) == 1 and path.stat().st_size < big / 10
    cache.close()


def test_a_cache_file_of_the_unbounded_version_is_upgraded_in_place(tmp_path, clock):
    path = tmp_path / "web.sqlite"
    with sqlite3.connect(path) as old:  # the schema before the bound
        old.execute("CREATE TABLE results (key TEXT PRIMARY KEY, stored REAL, passages TEXT)")
        rows = json.dumps([[p.id, p.contents, p.score, p.url] for p in PAGE])
        old.executemany("INSERT INTO results VALUES (?, ?, ?)", [(f"q{i}", clock[0] + i, rows) for i in range(10)])
    clock[0] += 10
    cache = WebCache(path, ttl=10**9, max_bytes=24_576)  # room for a few of them: the last stored
    assert cache.disk_bytes() <= 24_576 and 0 < len(cache) < 10
    assert cache.get("q9") == PAGE and cache.get("q0") is None
    cache.close()
