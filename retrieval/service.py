"""The retriever over HTTP: ReSearch's, Search-R1's and our own search APIs.

Drop-in for the retrievers the reference training and evaluation scripts call:

* ReSearch (FlashRAG style): ``POST /search`` ``{"query", "top_n", "return_score"}``
  and ``POST /batch_search`` with a list of queries; documents are
  ``{"id", "contents"}``, and with ``return_score`` the reply is ``[documents, scores]``.
* Search-R1: ``POST /retrieve`` ``{"queries", "topk", "return_scores"}`` answering
  ``{"result": [[doc | {"document": doc, "score"}, ...], ...]}``.
* Ours: ``POST /v1/search`` ``{"queries", "k", "mode"}`` answering passages with
  id, title, text and score, in vector, BM25 or hybrid mode.

Every request goes through the given :class:`BatchingRetriever`, so concurrent
requests share embedding calls and never block the event loop. The router is
mounted by ``research-index serve`` and by the chat server alike.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Annotated, Literal

from fastapi import APIRouter, FastAPI, Request
from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from starlette.convertors import Convertor, register_url_convertor

from research.http_errors import APIError, Text, errors, install_error_handlers
from research.retrieval.batching import BatchingRetriever, FetchUnsupported, SearchTimeout
from research.retrieval.index import PassageIndex
from research.retrieval.remote import RetrieverUnavailable
from research.wire import (
    DEFAULT_K,
    MAX_K,
    Document,
    Passage,
    QueryResult,
    ReSearchBatchReply,
    ReSearchReply,
    RetrieveReply,
    ScoredDocument,
    SearchMode,
    SearchResponse,
)

log = logging.getLogger("research.retrieval")

MAX_QUERIES = 1024
"""Most queries one request may carry."""
MAX_ID_CHARS = 4096
"""Longest passage id looked up (wiki-18's are numbers; a web passage's is its URL)."""
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class AnyText(Convertor[str]):
    """A path parameter that matches anything, line breaks included (Starlette's ``path`` stops at one, so a
    request for ``/v1/passages/a%0Ab`` would never reach its route)."""

    regex = "[\\s\\S]*"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("anytext", AnyText())


def _not_empty(query: str) -> str:
    if not query.strip():
        raise ValueError("Query content cannot be empty")  # ReSearch's own retriever's words
    return query


Query = Annotated[Text, AfterValidator(_not_empty)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ReSearchQuery(_Body):
    query: Query
    top_n: int = Field(10, ge=1, le=MAX_K)
    return_score: bool = False


class ReSearchBatch(_Body):
    query: list[Query] = Field(min_length=1, max_length=MAX_QUERIES)
    top_n: int = Field(10, ge=1, le=MAX_K)
    return_score: bool = False


class SearchR1Query(_Body):
    queries: list[Query] = Field(min_length=1, max_length=MAX_QUERIES)
    topk: int | None = Field(None, ge=1, le=MAX_K)
    return_scores: bool = False


class IndexHealth(BaseModel):
    """``research-index serve``'s ``GET /health``."""

    status: Literal["ok"] = "ok"
    index: str
    passages: int


class SearchRequest(_Body):
    queries: list[Query] = Field(min_length=1, max_length=MAX_QUERIES)
    k: int = Field(DEFAULT_K, ge=1, le=MAX_K)
    mode: SearchMode = "vector"


def _request_id(request: Request) -> str | None:
    return request.headers.get("x-request-id")


@dataclass(frozen=True, slots=True)
class Searcher:
    """The routes' searches and lookups: a failing index is a 503, one slower than ``timeout`` seconds a 504."""

    retriever: BatchingRetriever
    timeout: float

    async def __call__(
        self, request_id: str | None, queries: list[str], k: int, mode: SearchMode = "vector"
    ) -> list[list[Passage]]:
        """Top-``k`` passages per query (``request_id``: the request's, for the log)."""
        with self._failures(request_id):
            retrieved = await self.retriever.using(mode, timeout=self.timeout).search(queries, k=k)
        return retrieved.passages

    async def fetch(self, request_id: str | None, passage_id: str) -> Passage:
        """The passage with this id; the same 404 for an id the index lacks and one no passage can have (control
        characters, over :data:`MAX_ID_CHARS`), which is never looked up."""
        found = {}
        if len(passage_id) <= MAX_ID_CHARS and not _CONTROL.search(passage_id):
            with self._failures(request_id):
                found = await self.retriever.fetch([passage_id], timeout=self.timeout)
        if passage_id not in found:
            shown = passage_id if len(passage_id) <= 80 else passage_id[:80] + "..."
            raise APIError(404, f"no passage has the id {shown!r}", param="id", code="passage_not_found")
        return found[passage_id]

    @contextmanager
    def _failures(self, request_id: str | None) -> Iterator[None]:
        try:
            yield
        except Exception as exc:
            raise search_error(exc, request_id, self.retriever) from exc


def search_error(exc: Exception, request_id: str | None, retriever: BatchingRetriever) -> APIError:
    """The error a client gets for a search of ``retriever`` that failed with ``exc``: 504 past the search
    timeout, 503 ``retriever_unavailable`` naming a running retriever that is down or misbehaved (with its
    ``Retry-After``), 501 for a lookup by id it cannot do, else 503 naming the index, its cause in the log only
    (paths, library internals). Every route that searches (chat, completions, Responses, ``/v1/search``, the
    drop-in routes, MCP, ``/health``) answers with this."""
    extra = {"request_id": request_id}
    suffix = f" (request {request_id})" if request_id else ""
    headers = {"x-request-id": request_id} if request_id else {}  # and the retriever's Retry-After
    if isinstance(exc, SearchTimeout):
        log.warning("search timed out", extra=extra)
        return APIError(504, f"{exc}{suffix}", code="search_timeout", headers=headers)
    if isinstance(exc, RetrieverUnavailable):
        log.warning("%s", exc, extra=extra)
        if exc.retry_after is not None:
            headers["Retry-After"] = str(math.ceil(exc.retry_after))
        return APIError(503, f"{exc}{suffix}", code="retriever_unavailable", headers=headers)
    if isinstance(exc, FetchUnsupported):
        return APIError(501, str(exc), code="fetch_unsupported")
    searched = "passage index" if isinstance(retriever.index, PassageIndex) else repr(retriever.index)
    log.error("a search of the %s failed", searched, exc_info=exc, extra=extra)
    message = f"the search of the {searched} failed ({type(exc).__name__}){suffix}; the server log has the cause"
    return APIError(503, message, code="retriever_unavailable", headers=headers)


def dropin_router(retriever: BatchingRetriever, *, k: int = DEFAULT_K, search_timeout: float = 10.0) -> APIRouter:
    """The drop-in endpoints of ReSearch (``/search``, ``/batch_search``) and Search-R1 (``/retrieve``).

    ``k``: Search-R1's ``topk`` when a request leaves it out.
    """
    search = Searcher(retriever, search_timeout)
    router = APIRouter(tags=["retrieval"], responses=errors(503, 504))

    @router.post("/search")
    async def research_search(body: ReSearchQuery, request: Request) -> ReSearchReply:
        [hits] = await search(_request_id(request), [body.query], body.top_n)
        docs = [Document.of(p) for p in hits]
        return [docs, [p.score for p in hits]] if body.return_score else docs

    @router.post("/batch_search")
    async def research_batch_search(body: ReSearchBatch, request: Request) -> ReSearchBatchReply:
        results = await search(_request_id(request), body.query, body.top_n)
        docs = [[Document.of(p) for p in hits] for hits in results]
        return [docs, [[p.score for p in hits] for hits in results]] if body.return_score else docs

    @router.post("/retrieve")
    async def search_r1_retrieve(body: SearchR1Query, request: Request) -> RetrieveReply:
        results = await search(_request_id(request), body.queries, body.topk or k)
        if body.return_scores:
            return RetrieveReply(result=[[ScoredDocument(document=Document.of(p), score=p.score) for p in hits]
                                         for hits in results])  # fmt: skip
        return RetrieveReply(result=[[Document.of(p) for p in hits] for hits in results])

    return router


def v1_search_router(retriever: BatchingRetriever, *, search_timeout: float = 10.0) -> APIRouter:
    """``POST /v1/search`` and ``GET /v1/passages/{id}``, our own search API."""
    search = Searcher(retriever, search_timeout)
    router = APIRouter(tags=["retrieval"], responses=errors(503, 504))

    @router.post("/v1/search")
    async def v1_search(body: SearchRequest, request: Request) -> SearchResponse:
        results = await search(_request_id(request), body.queries, body.k, body.mode)
        return SearchResponse(
            data=[QueryResult(query=q, passages=hits) for q, hits in zip(body.queries, results, strict=True)]
        )

    @router.get("/v1/passages/{passage_id:anytext}", responses=errors(404, 501))
    async def v1_passage(passage_id: str, request: Request) -> Passage:
        """One passage by its id (what a search returned); 501 when the server searches a running retriever."""
        return await search.fetch(_request_id(request), passage_id)

    return router


def create_app(retriever: BatchingRetriever, *, k: int = DEFAULT_K, search_timeout: float = 10.0) -> FastAPI:
    """The standalone retriever service (``research-index serve``); a search past ``search_timeout`` s is a 504."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        await retriever.close()

    app = FastAPI(title="ReSearch retriever", lifespan=lifespan)
    install_error_handlers(app)
    app.include_router(dropin_router(retriever, k=k, search_timeout=search_timeout))
    app.include_router(v1_search_router(retriever, search_timeout=search_timeout))

    @app.get("/health")
    async def health() -> IndexHealth:
        return IndexHealth(index=retriever.index.uri, passages=len(retriever.index))

    return app
