"""A retriever that asks a running retriever service (``research-index serve``) over HTTP.

Speaks our ``POST /v1/search``; used by ``research-train --retriever-url`` so many
trainer processes share one index service. Transient failures are retried with
backoff (tenacity); a 4xx is raised at once.
"""

from __future__ import annotations

from collections.abc import Sequence

import httpx
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential

from research.retrieval.passage import Passage


def _transient(exc: BaseException) -> bool:
    if isinstance(exc, httpx.HTTPStatusError):
        return exc.response.status_code >= 500 or exc.response.status_code == 429
    return isinstance(exc, httpx.TransportError)


class RemoteRetriever:
    """``await RemoteRetriever(url).search(queries, k=5)`` against ``url`` (the service root)."""

    def __init__(self, url: str, *, timeout: float = 60.0, attempts: int = 5) -> None:
        self.url = url.rstrip("/").removesuffix("/v1")
        self.attempts = attempts
        self.client = httpx.AsyncClient(timeout=timeout)

    async def _post(self, queries: list[str], k: int) -> list[list[Passage]]:
        response = await self.client.post(f"{self.url}/v1/search", json={"queries": queries, "k": k})
        response.raise_for_status()
        return [
            [Passage(p["id"], p["contents"], p.get("score")) for p in item["passages"]]
            for item in response.json()["data"]
        ]

    async def search(self, queries: Sequence[str], *, k: int) -> list[list[Passage]]:
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.attempts),
            wait=wait_exponential(multiplier=0.2, max=5),
            retry=retry_if_exception(_transient),
            reraise=True,
        )
        return await retrying(self._post, list(queries), k)

    async def close(self) -> None:
        await self.client.aclose()
