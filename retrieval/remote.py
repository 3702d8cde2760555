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

import json
import logging
import math
from collections.abc import Sequence
from typing import Any, Literal, get_args
from urllib.parse import urlsplit, urlunsplit

import httpx
from pydantic import TypeAdapter, ValidationError
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from research.wire import DEFAULT_K, Document, Passage, RetrieveReply, SearchMode, SearchResponse

log = logging.getLogger("research.retrieval")

RetrieverAPI = Literal["search-r1", "research", "research-serve"]
RETRIEVER_APIS: tuple[RetrieverAPI, ...] = get_args(RetrieverAPI)
PATHS: dict[RetrieverAPI, str] = {"search-r1": "/retrieve", "research": "/batch_search", "research-serve": "/v1/search"}
"""Each API's endpoint."""
MAX_RETRY_AFTER = 30.0
"""Longest ``Retry-After`` honoured, in seconds (a longer one waits this long)."""
MAX_REPLY_BYTES = 2 * 2**20
"""Default most bytes of a retriever's reply read per query it answers (``--retriever-max-bytes``): a hundred
wiki-18 passages are about 70 KB."""


class RetrieverUnavailable(Exception):
    """A remote retriever did not answer, or answered with something that is not its API's.

    ``retry_after``: the seconds its last reply's ``Retry-After`` asked for, if it sent one.
    """

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def public_url(url: str) -> str:
    """``url`` as it may be shown to a client: without credentials or query (where an API key may sit).

    >>> public_url("https://user:secret@retriever.example:8000/retrieve?key=abc")
    'https://retriever.example:8000/retrieve'
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = (f"[{host}]" if ":" in host else host) + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


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


def retry_after(exc: BaseException | None) -> float | None:
    """The seconds an HTTP error's ``Retry-After`` asks for (at most :data:`MAX_RETRY_AFTER`), if it has one."""
    if isinstance(exc, httpx.HTTPStatusError):
        try:
            seconds = float(exc.response.headers.get("retry-after", ""))
        except ValueError:
            return None
        return min(seconds, MAX_RETRY_AFTER) if math.isfinite(seconds) and seconds >= 0 else None
    return None


def _retry_after(state: RetryCallState) -> float | None:
    return retry_after(state.outcome.exception() if state.outcome else None)


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


def read_json(http: httpx.Client, request: httpx.Request, *, max_bytes: int, who: str) -> Any:
    """The JSON body of the reply to ``request``, of which at most ``max_bytes`` bytes are read.

    A non-2xx reply raises :class:`httpx.HTTPStatusError` (with the first bytes of its body) and a
    connection failure httpx's error, as ``raise_for_status`` would, so that :func:`retrying` can
    retry them; a reply over ``max_bytes`` (the rest is never read) or not JSON fails at once with
    :class:`RetrieverUnavailable` naming ``who``.
    """
    response = http.send(request, stream=True)
    try:
        declared = response.headers.get("content-length", "")
        body = bytearray()
        too_large = declared.isdigit() and int(declared) > max_bytes
        for chunk in () if too_large else response.iter_bytes():
            body += chunk
            if too_large := len(body) > max_bytes:
                break
        if too_large:
            raise RetrieverUnavailable(f"{who} sent a reply over the limit of {max_bytes} bytes "
                                       "(--retriever-max-bytes); it was dropped")  # fmt: skip
    finally:
        response.close()
    if response.is_error:
        kept = {k: v for k, v in response.headers.items() if k.lower() == "retry-after"}
        error = httpx.Response(response.status_code, headers=kept, content=bytes(body[:500]), request=request)
        raise httpx.HTTPStatusError(f"HTTP {response.status_code}", request=request, response=error)
    try:
        return json.loads(body)
    except ValueError as exc:  # not JSON, or not UTF-8
        raise RetrieverUnavailable(f"{who} answered with a body that is not JSON ({exc})") from None


def unavailable(who: str, exc: httpx.HTTPError) -> RetrieverUnavailable:
    """What a call to ``who`` that failed with ``exc`` (after its retries) tells a client."""
    if isinstance(exc, httpx.HTTPStatusError):
        status, said = exc.response.status_code, " ".join(exc.response.text.split())[:200]
        if status in (401, 403):
            why = f"refused its API key (HTTP {status})"
        elif retryable(exc):
            why = f"is unavailable (HTTP {status})"
        else:
            why = f"refused the search (HTTP {status})"
        return RetrieverUnavailable(f"{who} {why}" + (f": {said}" if said else ""), retry_after(exc))
    return RetrieverUnavailable(f"{who} is unreachable ({type(exc).__name__})")


def shape_error(exc: ValidationError) -> str:
    """Where a reply's shape was wrong, in a few words (pydantic's first error).

    >>> from pydantic import TypeAdapter
    >>> try: TypeAdapter(dict[str, list[int]]).validate_python({"result": [1, "x"]})
    ... except ValidationError as exc: print(shape_error(exc))
    result.1: Input should be a valid integer, unable to parse string as an integer
    """
    first = exc.errors(include_url=False)[0]
    where = ".".join(str(part) for part in first["loc"] if "[" not in str(part))  # not a union member's name
    return f"{where}: {first['msg']}" if where else first["msg"]


class RemoteIndex:
    """A running retriever at ``url`` speaking ``api`` (inferred from the URL's path when None).

    ``timeout``: seconds one request may take; ``attempts``: tries per search (retrying as above);
    ``max_bytes``: most bytes of a reply read per query it answers (a larger reply fails the search).
    Whatever it answers is checked before it goes further: each query's passages cut to ``k``, then
    validated (scores finite or dropped, texts valid Unicode: :class:`~research.wire.Passage`).
    """

    def __init__(
        self,
        url: str,
        api: RetrieverAPI | None = None,
        *,
        timeout: float = 30.0,
        attempts: int = 4,
        max_bytes: int = MAX_REPLY_BYTES,
    ) -> None:
        if api is not None and api not in RETRIEVER_APIS:
            raise ValueError(f"unknown retriever API {api!r}; choose one of {', '.join(RETRIEVER_APIS)}")
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be at least 1, got {max_bytes}")
        self.api: RetrieverAPI = api or infer_api(url)
        self.uri = endpoint(url, self.api)
        self.max_bytes = max_bytes
        self.who = f"the retriever at {public_url(self.uri)}"
        """How errors and logs name it (no credentials)."""
        self._http = httpx.Client(timeout=timeout)
        self._retrying = retrying(self.who, attempts)

    def __repr__(self) -> str:
        return f"{self.api} retriever at {public_url(self.uri)}"

    def search(self, queries: Sequence[str], *, k: int = DEFAULT_K, mode: SearchMode = "vector") -> list[list[Passage]]:
        """Top-``k`` passages for each query, in one request."""
        if not queries:
            return []
        if mode != "vector" and self.api != "research-serve":
            raise ValueError(f"the {self.api} retriever at {public_url(self.uri)} ranks its own way: search_mode "
                             f"{mode!r} needs a research-serve retriever or a local index")  # fmt: skip
        request = self._http.build_request("POST", self.uri, json=self._request(list(queries), k, mode))
        try:
            body = self._retrying(read_json, self._http, request, max_bytes=self.max_bytes * len(queries), who=self.who)
        except httpx.HTTPError as exc:
            raise unavailable(self.who, exc) from exc
        try:
            found = self._parse(body, k)
        except ValidationError as exc:
            raise RetrieverUnavailable(f"{self.who} answered with a body that is not the {self.api} API's "
                                       f"({shape_error(exc)})") from None  # fmt: skip
        except ValueError as exc:  # documents and scores of different lengths
            raise RetrieverUnavailable(f"{self.who} answered with a body that is not the {self.api} API's "
                                       f"({exc})") from None  # fmt: skip
        if len(found) != len(queries):
            raise RetrieverUnavailable(f"{self.who} answered {len(found)} of {len(queries)} queries")
        return found

    def _request(self, queries: list[str], k: int, mode: SearchMode) -> dict[str, Any]:
        if self.api == "search-r1":
            return {"queries": queries, "topk": k, "return_scores": True}
        if self.api == "research":
            return {"query": queries, "top_n": k, "return_score": True}
        return {"queries": queries, "k": k, "mode": mode}

    def _parse(self, body: Any, k: int) -> list[list[Passage]]:
        """The reply's passages, each query's cut to ``k`` before anything is validated."""
        if self.api == "search-r1":
            if isinstance(body, dict):
                body = {**body, "result": _first(body.get("result"), k)}
            return RetrieveReply.model_validate(body).passages()
        if self.api == "research":
            documents, scores = _SCORED_BATCH.validate_python([_first(rows, k) for rows in body]
                                                              if isinstance(body, list) else body)  # fmt: skip
            return [
                [d.passage(s) for d, s in zip(docs, row, strict=True)]
                for docs, row in zip(documents, scores, strict=True)
            ]
        if isinstance(body, dict) and isinstance(body.get("data"), list):
            body = {**body, "data": [{**r, "passages": r["passages"][:k]}
                                     if isinstance(r, dict) and isinstance(r.get("passages"), list) else r
                                     for r in body["data"]]}  # fmt: skip
        return [result.passages for result in SearchResponse.model_validate(body).data]

    def close(self) -> None:
        self._http.close()


def _first(rows: Any, k: int) -> Any:
    """Each list in ``rows`` (a reply's per-query lists) cut to its first ``k`` items; anything else as it is, for
    validation to name."""
    if isinstance(rows, list):
        return [row[:k] if isinstance(row, list) else row for row in rows]
    return rows
