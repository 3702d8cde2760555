"""Search the web: SearXNG, Brave Search, Tavily or Serper as the search loop's retriever.

:class:`WebSearch` has :class:`~research.retrieval.index.PassageIndex`'s shape (a blocking,
batched ``search``), so :class:`~research.retrieval.batching.BatchingRetriever` fronts it as it
fronts LanceDB. Each result becomes a :class:`~research.wire.Passage` whose ``id`` and ``url``
are the page's URL and whose ``contents`` is ``"Title"\\ntext`` (the provider's snippet, or the
page's main text with ``fetch_pages``): the result block the model reads has wiki-18's shape.

* Provider calls are retried on connection errors, 408, 429 and 5xx with backoff, honouring
  ``Retry-After`` (the retry policy of :mod:`~research.retrieval.remote`); at most
  ``concurrency`` run at once. A provider that stays down, refuses the key or answers with a
  body that is not its API's fails the search with
  :class:`~research.retrieval.remote.RetrieverUnavailable`, naming the provider.
* :class:`WebCache` keeps each query's results on local disk (SQLite) for ``ttl`` seconds: a
  repeated evaluation or training epoch makes no provider call.
"""

from __future__ import annotations

import html
import json
import logging
import os
import re
import sqlite3
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ClassVar, Literal, get_args
from urllib.parse import urlsplit

import httpx
from pydantic import BaseModel, ValidationError

from research.retrieval.remote import (
    MAX_REPLY_BYTES,
    RetrieverUnavailable,
    public_url,
    read_json,
    retrying,
    shape_error,
    unavailable,
)
from research.wire import DEFAULT_K, Passage, SearchMode

log = logging.getLogger("research.retrieval")

WebProvider = Literal["searxng", "brave", "tavily", "serper"]
WEB_PROVIDERS: tuple[WebProvider, ...] = get_args(WebProvider)
PAGE_TIMEOUT = 10.0
"""Seconds one page fetch may take (``fetch_pages``); then the provider's snippet stands."""
PAGE_BYTES = 2 * 2**20
"""Most bytes of a page read (``fetch_pages``); the rest is not downloaded."""
PAGE_WORDS = 200
"""Most words of a page's main text kept as its passage (wiki-18 passages are 100 words)."""


# -- what each provider sends back (the documented fields we read) ---------------------------------


class _Hit(BaseModel):
    """One result, whatever the provider: its page, title and text."""

    url: str
    title: str
    text: str
    score: float | None = None


class _Result(BaseModel):
    """A SearXNG or Tavily result."""

    url: str
    title: str = ""
    content: str = ""
    score: float | None = None


class _Results(BaseModel):
    """SearXNG's and Tavily's reply."""

    results: list[_Result]

    @classmethod
    def hits(cls, body: Any) -> list[_Hit]:
        return [_Hit(url=r.url, title=r.title, text=r.content, score=r.score) for r in cls.model_validate(body).results]


class _BraveResult(BaseModel):
    url: str
    title: str = ""
    description: str = ""
    extra_snippets: list[str] = []


class _BraveWeb(BaseModel):
    results: list[_BraveResult] = []


class _BraveReply(BaseModel):
    web: _BraveWeb | None = None
    """Absent when nothing was found."""


class _SerperResult(BaseModel):
    link: str
    title: str = ""
    snippet: str = ""


class _SerperReply(BaseModel):
    organic: list[_SerperResult] = []


def plain(text: str) -> str:
    """A snippet without markup: tags dropped, entities decoded, whitespace collapsed.

    >>> plain("The <strong>Eiffel</strong> Tower &amp; its  history")
    'The Eiffel Tower & its history'
    """
    return " ".join(html.unescape(re.sub(r"<[^>]+>", "", text)).split())


class Provider:
    """A web search API: where it is, which key it takes, how to ask it and how to read its reply."""

    name: ClassVar[WebProvider]
    url: ClassVar[str | None]
    """Its public endpoint (None: self-hosted, give the URL)."""
    keys: ClassVar[tuple[str, ...]] = ()
    """Environment variables its API key is read from, first set wins (none: no key)."""
    most: ClassVar[int] = 20
    """Most results one call returns."""

    @classmethod
    def resolve(cls, url: str | None, key: str | None) -> tuple[str, str | None]:
        """The endpoint and key to use (defaults: its public endpoint, its environment variables), or a
        ValueError saying which is missing."""
        url = url or cls.url
        if url is None:
            raise ValueError(f"--web-search {cls.name} is self-hosted: give its URL with --web-search-url "
                             "(e.g. http://localhost:8080/search, with JSON enabled in its settings.yml)")  # fmt: skip
        key = key or next((os.environ[v] for v in cls.keys if os.environ.get(v)), None)
        if cls.keys and not key:
            raise ValueError(f"--web-search {cls.name} needs an API key in ${' or $'.join(cls.keys)}")
        return url, key

    def request(self, url: str, key: str | None, query: str, k: int) -> httpx.Request:
        raise NotImplementedError

    def hits(self, body: Any) -> list[_Hit]:
        raise NotImplementedError


class Searxng(Provider):
    name, url = "searxng", None

    def request(self, url: str, key: str | None, query: str, k: int) -> httpx.Request:
        return httpx.Request("GET", url, params={"q": query, "format": "json"})

    def hits(self, body: Any) -> list[_Hit]:
        return _Results.hits(body)


class Brave(Provider):
    name, url = "brave", "https://api.search.brave.com/res/v1/web/search"
    keys = ("BRAVE_API_KEY", "BRAVE_SEARCH_API_KEY")

    def request(self, url: str, key: str | None, query: str, k: int) -> httpx.Request:
        headers = {"Accept": "application/json", "X-Subscription-Token": key or ""}
        return httpx.Request("GET", url, params={"q": query, "count": min(k, self.most)}, headers=headers)

    def hits(self, body: Any) -> list[_Hit]:
        web = _BraveReply.model_validate(body).web
        return [
            _Hit(url=r.url, title=r.title, text=" ".join([r.description, *r.extra_snippets]))
            for r in (web.results if web else [])
        ]


class Tavily(Provider):
    name, url = "tavily", "https://api.tavily.com/search"
    keys = ("TAVILY_API_KEY",)

    def request(self, url: str, key: str | None, query: str, k: int) -> httpx.Request:
        body = {"query": query, "max_results": min(k, self.most)}
        return httpx.Request("POST", url, json=body, headers={"Authorization": f"Bearer {key}"})

    def hits(self, body: Any) -> list[_Hit]:
        return _Results.hits(body)


class Serper(Provider):
    name, url = "serper", "https://google.serper.dev/search"
    keys = ("SERPER_API_KEY",)
    most = 100

    def request(self, url: str, key: str | None, query: str, k: int) -> httpx.Request:
        return httpx.Request("POST", url, json={"q": query, "num": min(k, self.most)}, headers={"X-API-KEY": key or ""})

    def hits(self, body: Any) -> list[_Hit]:
        return [_Hit(url=r.link, title=r.title, text=r.snippet) for r in _SerperReply.model_validate(body).organic]


PROVIDERS: dict[WebProvider, type[Provider]] = {p.name: p for p in (Searxng, Brave, Tavily, Serper)}


def default_cache_path() -> Path:
    """``$RESEARCH_CACHE/web-search.sqlite`` (default ``~/.cache/research``)."""
    return Path(os.environ.get("RESEARCH_CACHE", Path.home() / ".cache" / "research")) / "web-search.sqlite"


CACHE_MAX_BYTES = 512 * 2**20
"""Default bound of the web cache's stored results (``--web-cache-max-mb``)."""
WAL_BYTES = 16 * 2**20
"""Size the web cache's write-ahead log is cut back to after each checkpoint."""
PRUNE_EVERY = 256
"""Writes between two prunes of the web cache (expired rows, then the least recently used past its bound)."""


class WebCache:
    """Each query's passages on local disk (SQLite), reused for ``ttl`` seconds; safe across threads and
    processes (a server and an evaluation may share one file).

    Bounded: every :data:`PRUNE_EVERY` writes (and on opening) the expired rows are deleted, then the least
    recently used ones until the database takes at most ``max_bytes`` (its pages in use: rows, overflow and
    index), and the freed pages go back to the file system (``auto_vacuum=INCREMENTAL``), so a public server's
    cache does not grow with every query.
    """

    def __init__(self, path: str | Path, ttl: float, *, max_bytes: int = CACHE_MAX_BYTES) -> None:
        if max_bytes < 1:
            raise ValueError(f"the web cache's bound must be at least 1 byte, got {max_bytes}")
        self.path, self.ttl, self.max_bytes = Path(path), ttl, max_bytes
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=30, isolation_level=None)
        self._lock = threading.Lock()
        self._writes = 0
        with self._lock:
            if self._db.execute("PRAGMA auto_vacuum").fetchone()[0] != 2:  # new, or made before it was bounded
                self._db.execute("PRAGMA auto_vacuum=INCREMENTAL")
                self._db.execute("VACUUM")  # the setting takes effect on an existing file only through VACUUM
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA journal_size_limit={WAL_BYTES}")  # the log is cut back after a checkpoint
            self._db.execute("CREATE TABLE IF NOT EXISTS results (key TEXT PRIMARY KEY, stored REAL, passages TEXT)")
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(results)")}
            if "used" not in columns:  # a cache file of an older version: when each row was last read, its size
                self._db.execute("ALTER TABLE results ADD COLUMN used REAL")
                self._db.execute("ALTER TABLE results ADD COLUMN size INTEGER")
                self._db.execute("UPDATE results SET used = stored, size = length(key) + length(passages)")
            self._db.execute("CREATE INDEX IF NOT EXISTS results_used ON results (used)")
        self.prune()

    def get(self, key: str) -> list[Passage] | None:
        now = time.time()
        with self._lock:
            row = self._db.execute("SELECT stored, passages FROM results WHERE key = ?", (key,)).fetchone()
            if row is None or now - row[0] > self.ttl:
                return None
            self._db.execute("UPDATE results SET used = ? WHERE key = ?", (now, key))
        return [Passage(*fields) for fields in json.loads(row[1])]

    def put(self, key: str, passages: list[Passage]) -> None:
        rows = json.dumps([[p.id, p.contents, p.score, p.url] for p in passages])
        now = time.time()
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO results (key, stored, passages, used, size) VALUES (?, ?, ?, ?, ?)",
                (key, now, rows, now, len(key) + len(rows)),
            )
            self._writes += 1
            due = self._writes % PRUNE_EVERY == 0
        if due:
            self.prune()

    def __len__(self) -> int:
        """Queries whose results are stored."""
        with self._lock:
            return self._db.execute("SELECT count(*) FROM results").fetchone()[0]

    def disk_bytes(self) -> int:
        """The bytes of the database's pages in use (what ``max_bytes`` bounds; the write-ahead log aside)."""
        with self._lock:
            return self._disk_bytes()

    def _disk_bytes(self) -> int:
        pages = (
            self._db.execute("PRAGMA page_count").fetchone()[0]
            - self._db.execute("PRAGMA freelist_count").fetchone()[0]
        )
        return pages * self._db.execute("PRAGMA page_size").fetchone()[0]

    def _stored_bytes(self) -> int:
        return self._db.execute("SELECT coalesce(sum(size), 0) FROM results").fetchone()[0]

    def prune(self) -> None:
        """Delete the expired rows, then the least recently used ones past ``max_bytes`` (the share of the stored
        rows that fits, as the database's pages a row takes on average); give the pages back."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute("DELETE FROM results WHERE stored < ?", (time.time() - self.ttl,))
                while (disk := self._disk_bytes()) > self.max_bytes:  # keep what fits, pages and index included
                    budget = 0.95 * self._stored_bytes() * self.max_bytes / disk  # pages are never all full
                    deleted = self._db.execute(
                        "DELETE FROM results WHERE key IN (SELECT key FROM (SELECT key, sum(size) OVER "
                        "(ORDER BY used DESC, key ROWS UNBOUNDED PRECEDING) AS kept FROM results) WHERE kept > ?)",
                        (budget,),
                    ).rowcount
                    if not deleted:  # an empty cache over the bound: its schema alone
                        break
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.executescript("PRAGMA incremental_vacuum;")  # execute() would free one page only
            self._db.execute("PRAGMA wal_checkpoint(PASSIVE)")  # the file shrinks when the log is written back

    def close(self) -> None:
        self._db.close()


class PageReader:
    """A page's main text (trafilatura): its first ``words`` words, read within ``timeout`` seconds and
    ``max_bytes`` bytes."""

    def __init__(self, *, timeout: float = PAGE_TIMEOUT, max_bytes: int = PAGE_BYTES, words: int = PAGE_WORDS) -> None:
        try:
            import trafilatura
        except ImportError as exc:
            raise ValueError("--web-fetch-pages needs trafilatura: pip install 'research-serve[web]'") from exc
        self._extract = trafilatura.extract
        self.timeout, self.max_bytes, self.words = timeout, max_bytes, words
        self._http = httpx.Client(timeout=timeout, follow_redirects=True)
        self._reads = ThreadPoolExecutor(8, thread_name_prefix="web-pages")

    def read_all(self, pages: list[tuple[str, str]]) -> list[str | None]:
        """:meth:`read` of each (url, title), several at once."""
        return list(self._reads.map(lambda page: self.read(*page), pages))

    def read(self, url: str, title: str = "") -> str | None:
        """The page's main text (without a first line that is ``title``), None when it cannot be had in time
        (a page past the deadline or the size bound is read as far as it came)."""
        deadline = time.monotonic() + self.timeout
        try:
            with self._http.stream("GET", url) as response:
                response.raise_for_status()
                page = bytearray()
                for chunk in response.iter_bytes():
                    page += chunk
                    if len(page) >= self.max_bytes or time.monotonic() > deadline:
                        break
        except httpx.HTTPError as exc:
            log.info("page %s not read (%s): its snippet stands", url, type(exc).__name__)
            return None
        lines = (self._extract(bytes(page[: self.max_bytes]), favor_precision=True) or "").splitlines()
        if lines and lines[0].strip() == title:
            lines = lines[1:]  # the page's heading: the passage has its title
        return " ".join(" ".join(lines).split()[: self.words]) or None

    def close(self) -> None:
        self._reads.shutdown(wait=False, cancel_futures=True)
        self._http.close()


class WebSearch:
    """A web search provider as the retriever.

    ``url``: the provider's endpoint (SearXNG's ``http://host:8080/search``; the others default to
    their public one); ``key``: its API key (default: from its environment variables);
    ``pages``: reads each result's page for its text instead of the snippet; ``cache``: reuses
    results; ``concurrency``: provider calls at once; ``timeout`` and ``attempts`` per call;
    ``max_bytes``: most bytes of a reply read (a larger one fails the search).
    """

    def __init__(
        self,
        provider: WebProvider,
        url: str | None = None,
        *,
        key: str | None = None,
        pages: PageReader | None = None,
        cache: WebCache | None = None,
        concurrency: int = 4,
        timeout: float = 15.0,
        attempts: int = 4,
        max_bytes: int = MAX_REPLY_BYTES,
    ) -> None:
        if provider not in PROVIDERS:
            raise ValueError(f"unknown web search provider {provider!r}; choose one of {', '.join(WEB_PROVIDERS)}")
        self.provider = PROVIDERS[provider]()
        self.url, self.key = self.provider.resolve(url, key)
        self.cache = cache
        self.pages = pages
        self.max_bytes = max_bytes
        self._http = httpx.Client(timeout=timeout)
        self._calls = ThreadPoolExecutor(concurrency, thread_name_prefix=f"web-{provider}")
        self.who = f"the {self!r}"
        """How errors and logs name it (no credentials)."""
        self._retrying = retrying(self.who, attempts)

    def __repr__(self) -> str:
        return f"{self.provider.name} web search at {public_url(self.url)}"

    def search(self, queries: Sequence[str], *, k: int = DEFAULT_K, mode: SearchMode = "vector") -> list[list[Passage]]:
        """Top-``k`` pages for each query, the cached ones without a provider call."""
        if mode != "vector":
            raise ValueError(f"the {self!r} ranks its own way: search_mode {mode!r} needs a local index")
        return list(self._calls.map(lambda q: self._search(q, k), queries))

    def _search(self, query: str, k: int) -> list[Passage]:
        key = json.dumps([self.provider.name, self.url, query, k, self.pages is not None])
        if self.cache is not None and (cached := self.cache.get(key)) is not None:
            return cached
        passages = self._passages(self._hits(query, k))
        if self.cache is not None:
            self.cache.put(key, passages)
        return passages

    def _hits(self, query: str, k: int) -> list[_Hit]:
        request = self.provider.request(self.url, self.key, query, k)
        try:
            body = self._retrying(read_json, self._http, request, max_bytes=self.max_bytes, who=self.who)
        except httpx.HTTPError as exc:
            raise unavailable(self.who, exc) from exc
        try:
            hits = self.provider.hits(body)
        except ValidationError as exc:
            why = shape_error(exc)
            raise RetrieverUnavailable(f"{self.who} answered with a body that is not its API's ({why})") from None
        pages: dict[str, _Hit] = {}
        for hit in hits:  # one passage a page, at its first rank
            pages.setdefault(hit.url, hit)
        return list(pages.values())[:k]

    def _passages(self, hits: list[_Hit]) -> list[Passage]:
        titles = [plain(hit.title) or urlsplit(hit.url).netloc for hit in hits]
        urls = [hit.url for hit in hits]
        pages = self.pages.read_all(list(zip(urls, titles, strict=True))) if self.pages else [None] * len(hits)
        passages = []
        for hit, title, page in zip(hits, titles, pages, strict=True):
            passages.append(Passage(hit.url, f'"{title}"\n{page or plain(hit.text)}', hit.score, hit.url))
        return passages

    def close(self) -> None:
        self._calls.shutdown(wait=False, cancel_futures=True)
        self._http.close()
        if self.pages:
            self.pages.close()
        if self.cache is not None:
            self.cache.close()
