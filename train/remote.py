"""A retriever that asks a running retriever service (``research-index serve`` or ``research-serve``) over HTTP.

Speaks our ``POST /v1/search`` through :class:`research.clients.AsyncClient`; used by
``research-train --retriever-url`` so many trainer processes share one index service.
Connection errors, 408, 429 and 5xx are retried with exponential backoff (the ``openai``
SDK's policy); any other 4xx is raised at once (``openai.BadRequestError`` ...).
"""

from __future__ import annotations

from collections.abc import Sequence

from research.clients.client import AsyncClient
from research.protocol import Retrieved


class RemoteRetriever:
    """``await RemoteRetriever(url).search(queries, k=5)`` against ``url`` (the service, with or without ``/v1``)."""

    def __init__(self, url: str, *, timeout: float = 60.0, attempts: int = 5, api_key: str | None = None) -> None:
        self.client = AsyncClient(url, api_key=api_key, timeout=timeout, max_retries=attempts - 1)

    async def search(self, queries: Sequence[str], *, k: int) -> Retrieved:
        return Retrieved(await self.client.search(list(queries), k=k))

    async def close(self) -> None:
        await self.client.close()
