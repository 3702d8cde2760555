"""Search a retriever someone already runs: Search-R1's, ReSearch's, or another ``research-serve``.

:class:`RemoteIndex` has :class:`~research.retrieval.index.PassageIndex`'s shape (a blocking,
batched ``search``), so :class:`~research.retrieval.batching.BatchingRetriever` fronts it
as it fronts LanceDB: the searches that arrive together go out as one request, under the
search timeout. Three APIs:

* ``search-r1``: Search-R1's ``search_r1/search/retrieval_server.py``, ``POST /retrieve``
  ``{"queries", "topk", "return_scores": true}`` → ``{"result": [[{"document", "score"}]]}``;
* ``research``: ReSearch's (FlashRAG style) ``POST /batch_search`` ``{"query", "top_n",
  "return_score": true}`` → ``[documents, scores]``;
* ``research-serve``: ours (``research-serve``, ``research-index serve``), ``POST /v1/search``.

A document's ``contents`` is kept byte for byte, so the result block the model reads is the
one those servers' own clients build. Connection errors, 408, 429 and 5xx are retried with
exponential backoff (honouring ``Retry-After``); when the retries run out, or the reply is
not the API's, the search fails with :class:`RetrieverUnavailable`, naming the retriever.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Literal, get_args
from urllib.parse import urlsplit

import httpx
from pydantic import TypeAdapter, ValidationError
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from research.wire import Document, Passage, RetrieveReply, SearchMode, SearchResponse

log = logging.getLogger("research.retrieval")

RetrieverAPI = Literal["search-r1", "research", "research-serve"]
RETRIEVER_APIS: tuple[RetrieverAPI, ...] = get_args(RetrieverAPI)
PATHS: dict[RetrieverAPI, str] = {"search-r1": "/retrieve", "research": "/batch_search", "research-serve": "/v1/search"}
"""Each API's endpoint."""
MAX_RETRY_AFTER = 30.0
"""Longest ``Retry-After`` honoured, in seconds (a longer one waits this long)."""


class RetrieverUnavailable(Exception):
    """A remote retriever did not answer, or answered with something that is not its API's."""


def infer_api(url: str) -> RetrieverAPI:
    """The API a retriever URL speaks, from the endpoint its path ends with.

    >>> infer_api("http://gpu-node:8000/retrieve"), infer_api("http://h/batch_search"), infer_api("http://h/v1/search")
    ('search-r1', 'research', 'research-serve')
    """
    path = urlsplit(url).path.rstrip("/")
    for api, endpoint in PATHS.items():
        if path.endswith(endpoint):
            return api
    raise ValueError(
        f"cannot tell which API {url} speaks from its path: end it with /retrieve (Search-R1), /batch_search "
        "(ReSearch) or /v1/search (research-serve), or give --retriever-api"
    )


def endpoint(url: str, api: RetrieverAPI) -> str:
    """``url`` with ``api``'s endpoint path, unless it has it already (``http://h:8001`` → ``http://h:8001/retrieve``)."""
    url = url.rstrip("/")
    if urlsplit(url).path.endswith(PATHS[api]):
        return url
    return (url.removesuffix("/v1") if api == "research-serve" else url) + PATHS[api]


_SCORED_BATCH = TypeAdapter(tuple[list[list[Document]], list[list[float | None]]])
"""ReSearch's ``/batch_search`` reply with ``return_score`` (:data:`~research.wire.ReSearchBatchReply`), as asked."""


def retryable(exc: BaseException) -> bool:
    if isinstance(exc, httpx.HTTPStatusError):
        return exc.response.status_code in (408, 429) or exc.response.status_code >= 500
    return isinstance(exc, httpx.TransportError)


def _retry_after(state: RetryCallState) -> float | None:
    exc = state.outcome.exception() if state.outcome else None
    if isinstance(exc, httpx.HTTPStatusError):
        try:
            return min(float(exc.response.headers.get("retry-after", "")), MAX_RETRY_AFTER)
        except ValueError:
            return None
    return None


def retrying(service: str, attempts: int) -> Retrying:
    """Up to ``attempts`` tries of a call to ``service`` (named in the log): connection errors, 408, 429 and 5xx
    are retried after exponential backoff, or after the reply's ``Retry-After`` (at most :data:`MAX_RETRY_AFTER`)."""
    backoff = wait_exponential(multiplier=0.5, max=8)
    return Retrying(
        retry=retry_if_exception(retryable),
        stop=stop_after_attempt(attempts),
        wait=lambda state: _retry_after(state) or backoff(state),
        before_sleep=lambda state: log.warning(
            "%s failed (%s); retrying", service, state.outcome and state.outcome.exception()
        ),
        reraise=True,
    )


class RemoteIndex:
    """A running retriever at ``url`` speaking ``api`` (inferred from the URL's path when None).

    ``timeout``: seconds one request may take; ``attempts``: tries per search (retrying as above).
    """

    def __init__(self, url: str, api: RetrieverAPI | None = None, *, timeout: float = 30.0, attempts: int = 4) -> None:
        if api is not None and api not in RETRIEVER_APIS:
            raise ValueError(f"unknown retriever API {api!r}; choose one of {', '.join(RETRIEVER_APIS)}")
        self.api: RetrieverAPI = api or infer_api(url)
        self.uri = endpoint(url, self.api)
        self._http = httpx.Client(timeout=timeout)
        self._retrying = retrying(f"the retriever at {self.uri}", attempts)

    def __repr__(self) -> str:
        return f"{self.api} retriever at {self.uri}"

    def search(self, queries: Sequence[str], *, k: int = 5, mode: SearchMode = "vector") -> list[list[Passage]]:
        """Top-``k`` passages for each query, in one request."""
        if not queries:
            return []
        if mode != "vector" and self.api != "research-serve":
            raise ValueError(f"the {self.api} retriever at {self.uri} ranks its own way: search_mode {mode!r} needs "
                             "a research-serve retriever or a local index")  # fmt: skip
        try:
            body = self._retrying(self._post, self._request(list(queries), k, mode))
        except httpx.HTTPStatusError as exc:
            status = exc.response.status_code
            if not retryable(exc):
                raise ValueError(
                    f"the retriever at {self.uri} refused the search ({status}): {exc.response.text[:200]}"
                ) from exc
            raise RetrieverUnavailable(f"the retriever at {self.uri} is unavailable (HTTP {status})") from exc
        except httpx.TransportError as exc:
            raise RetrieverUnavailable(f"the retriever at {self.uri} is unreachable ({type(exc).__name__})") from exc
        try:
            found = self._parse(body)
        except (ValidationError, ValueError, TypeError) as exc:
            raise RetrieverUnavailable(f"the retriever at {self.uri} answered with a body that is not the "
                                       f"{self.api} API's") from exc  # fmt: skip
        if len(found) != len(queries):
            raise RetrieverUnavailable(f"the retriever at {self.uri} answered {len(found)} of {len(queries)} queries")
        return found

    def _request(self, queries: list[str], k: int, mode: SearchMode) -> dict[str, Any]:
        if self.api == "search-r1":
            return {"queries": queries, "topk": k, "return_scores": True}
        if self.api == "research":
            return {"query": queries, "top_n": k, "return_score": True}
        return {"queries": queries, "k": k, "mode": mode}

    def _post(self, body: dict[str, Any]) -> Any:
        response = self._http.post(self.uri, json=body)
        response.raise_for_status()
        return response.json()

    def _parse(self, body: Any) -> list[list[Passage]]:
        if self.api == "search-r1":
            return RetrieveReply.model_validate(body).passages()
        if self.api == "research":
            documents, scores = _SCORED_BATCH.validate_python(body)
            return [
                [d.passage(s) for d, s in zip(docs, row, strict=True)]
                for docs, row in zip(documents, scores, strict=True)
            ]
        return [result.passages for result in SearchResponse.model_validate(body).data]

    def close(self) -> None:
        self._http.close()
