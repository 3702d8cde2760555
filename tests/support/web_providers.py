"""Web search providers, replayed: the test bed cannot reach SearXNG, Brave, Tavily or Serper.

:class:`Replay` is a local stand-in of ours that speaks each provider's documented API (its
request, its key header, its JSON reply with the fields their docs list) and answers from a real
search of a LanceDB index, so the pages it "finds" are that index's passages: the title as the
page title, the text as the snippet, ``{base}/pages/{id}`` as the URL (an HTML page with the
passage, for page fetching). ``plan`` makes it misbehave as a provider can: a status with
headers and body, or a delay.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse

from research.retrieval import PassageIndex

KEY = "test-key"
PATHS = {"searxng": "/searxng/search", "brave": "/brave/res/v1/web/search", "tavily": "/tavily/search",
         "serper": "/serper/search"}  # fmt: skip


@dataclass
class Failure:
    """What the next provider request gets instead of an answer: a reply, or an answer after ``delay`` s."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None
    delay: float = 0.0


class Replay:
    """The four providers' APIs over ``index`` (see the module's docstring).

    ``calls``: (provider, time) of every provider request; ``plan``: failures for the next ones;
    ``short_snippets``: snippets of three words (the page has the whole text).
    """

    def __init__(self, index: PassageIndex) -> None:
        self.index = index
        self.base = ""
        self.calls: list[tuple[str, float]] = []
        self.plan: list[Failure] = []
        self.short_snippets = False
        self.in_flight = self.most_in_flight = 0
        self.delay = 0.0
        """Seconds every provider request takes."""
        self.app = FastAPI()
        self.app.get(PATHS["searxng"])(self.searxng)
        self.app.get(PATHS["brave"])(self.brave)
        self.app.post(PATHS["tavily"])(self.tavily)
        self.app.post(PATHS["serper"])(self.serper)
        self.app.get("/pages/endless")(self.endless_page)
        self.app.get("/pages/slow")(self.slow_page)
        self.app.get("/pages/{passage_id}")(self.page)

    def url(self, provider: str) -> str:
        return self.base + PATHS[provider]

    async def _hits(self, provider: str, query: str, k: int) -> list[dict[str, str]] | Response:
        self.calls.append((provider, time.monotonic()))
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delay)
            if self.plan:
                failure = self.plan.pop(0)
                await asyncio.sleep(failure.delay)
                if failure.status != 200 or failure.body is not None:
                    if isinstance(failure.body, str):
                        return Response(failure.body, failure.status, failure.headers, media_type="text/html")
                    return JSONResponse(failure.body, failure.status, failure.headers)
            [found] = await asyncio.to_thread(self.index.search, [query], k=k)
        finally:
            self.in_flight -= 1
        return [
            {"url": f"{self.base}/pages/{p.id}", "title": p.title,
             "text": " ".join(p.text.split()[:3]) if self.short_snippets else p.text, "score": p.score}
            for p in found
        ]  # fmt: skip

    @staticmethod
    def _refused(key: str | None) -> JSONResponse | None:
        return None if key == KEY else JSONResponse({"error": "invalid API key"}, 401)

    async def searxng(self, q: str, format: str = "html") -> Any:
        if format != "json":
            return Response("<html>results</html>", 403)  # SearXNG without format=json enabled
        hits = await self._hits("searxng", q, 10)
        if isinstance(hits, Response):
            return hits
        results = [{"url": h["url"], "title": h["title"], "content": h["text"], "engine": "replay",
                    "score": h["score"], "category": "general"} for h in hits]  # fmt: skip
        return {"query": q, "number_of_results": len(results), "results": results, "answers": [], "suggestions": []}

    async def brave(self, request: Request, q: str, count: int = 20) -> Any:
        if refused := self._refused(request.headers.get("x-subscription-token")):
            return refused
        hits = await self._hits("brave", q, count)
        if isinstance(hits, Response):
            return hits
        results = [{"type": "search_result", "title": f"<strong>{h['title']}</strong>", "url": h["url"],
                    "description": h["text"], "language": "en"} for h in hits]  # fmt: skip
        return {"type": "search", "query": {"original": q}, "web": {"type": "search", "results": results}}

    async def tavily(self, request: Request) -> Any:
        if refused := self._refused(request.headers.get("authorization", "").removeprefix("Bearer ")):
            return refused
        body = await request.json()
        hits = await self._hits("tavily", body["query"], body.get("max_results", 5))
        if isinstance(hits, Response):
            return hits
        results = [{"title": h["title"], "url": h["url"], "content": h["text"], "score": h["score"],
                    "raw_content": None} for h in hits]  # fmt: skip
        return {"query": body["query"], "answer": None, "images": [], "results": results, "response_time": 0.01}

    async def serper(self, request: Request) -> Any:
        if refused := self._refused(request.headers.get("x-api-key")):
            return refused
        body = await request.json()
        hits = await self._hits("serper", body["q"], body.get("num", 10))
        if isinstance(hits, Response):
            return hits
        organic = [{"title": h["title"], "link": h["url"], "snippet": h["text"], "position": i + 1}
                   for i, h in enumerate(hits)]  # fmt: skip
        return {"searchParameters": {"q": body["q"], "type": "search"}, "organic": organic}

    async def page(self, passage_id: str) -> HTMLResponse:
        [p] = (await asyncio.to_thread(self.index.fetch, [passage_id])).values()
        return HTMLResponse(
            f"<html><head><title>{p.title}</title></head><body><nav>Home | About</nav>"
            f"<article><h1>{p.title}</h1><p>{p.text}</p></article><footer>Replay</footer></body></html>"
        )

    async def slow_page(self) -> HTMLResponse:
        await asyncio.sleep(3)  # past the test's page timeout (1 s), short enough not to hold up the server's stop
        return HTMLResponse("<html><body><p>too late</p></body></html>")

    async def endless_page(self) -> StreamingResponse:
        async def forever():
            yield b"<html><body><article><p>"
            while True:
                yield b"An endless page of words. " * 400
                await asyncio.sleep(0)

        return StreamingResponse(forever(), media_type="text/html")
