"""The search agent and its index as Model Context Protocol tools: ``search``, ``fetch`` and ``ask``.

:func:`mcp_server` builds them over any :class:`Tools`: the server's own engine and index
(``/mcp`` on ``research-serve``, :mod:`research.server.mcp_local`), or, for ``research mcp``
over stdio, a running server reached over HTTP (:mod:`research.clients.mcp`) or a local
index, search tools only (:mod:`research.server.mcp_stdio`). They live with the clients
because both sides build on them. ``search`` and ``fetch`` have the shape OpenAI's deep-research
connectors ask of an MCP server: results with ``id``, ``title``, ``url`` and ``text``; a
fetched document adds ``metadata``. ``ask`` runs the ReSearch loop on the server's model and
sends one progress notification per search.

A tool that fails returns an MCP tool error (``isError``) carrying the message the HTTP API
would give for the same failure; only this module's light dependencies (``mcp``, pydantic)
load here, so ``research mcp --url`` needs neither the engine nor the index.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Annotated, Protocol
from urllib.parse import quote

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations
from pydantic import BaseModel, Field

from research.wire import MAX_K, Done, Event, Passage, Reply, SearchDone

NAME = "research"
INSTRUCTIONS = (
    "Wikipedia passages and a model trained to answer questions by searching them (ReSearch). "
    "Use `ask` for a question that needs several facts combined; `search` and `fetch` to read passages yourself."
)


def passage_url(title: str) -> str:
    """A stable URL for a wiki-18 passage: its Wikipedia article's (the corpus is a 2018 Wikipedia dump); a web
    search's passage has its own.

    >>> passage_url("Ray Charles (album)")
    'https://en.wikipedia.org/wiki/Ray_Charles_(album)'
    """
    return "https://en.wikipedia.org/wiki/" + quote(title.replace(" ", "_"), safe="()_,'")


class Result(BaseModel):
    """A passage as a search result."""

    id: str
    title: str
    url: str
    text: str

    @classmethod
    def of(cls, p: Passage) -> Result:
        return cls(id=p.id, title=p.title, url=p.url or passage_url(p.title), text=p.text)


class SearchResults(BaseModel):
    results: list[Result]


class FetchedDocument(Result):
    """A passage whole: its text, and where it came from."""

    metadata: dict[str, str]

    @classmethod
    def of(cls, p: Passage) -> FetchedDocument:
        return cls(**Result.of(p).model_dump(), metadata={"source": "wiki-18", "contents": p.contents})


class SearchMade(BaseModel):
    """A search the model made while answering: its query and the passages it read."""

    query: str
    results: list[Result]


class Cited(BaseModel):
    id: str
    title: str
    url: str
    search_index: int
    """The search (its place in ``searches``) that first returned the passage."""


class Answer(BaseModel):
    """What ``ask`` returns: the model's answer, each search it made, and the passages it read, once each."""

    answer: str | None
    """The model's final answer; null when it gave none (its token budget ran out)."""
    searches: list[SearchMade]
    citations: list[Cited]
    finish_reason: str | None
    """``stop``, or ``length`` when the response hit its token budget."""
    stop_reason: str | None = None
    """``search_limit`` when ``max_searches`` ran out."""

    @classmethod
    def of(cls, reply: Reply) -> Answer:
        return cls(
            answer=reply.answer,
            searches=[SearchMade(query=s.query, results=[Result.of(p) for p in s.results]) for s in reply.searches],
            citations=[
                Cited(id=c.id, title=c.title, url=c.url or passage_url(c.title), search_index=c.search_index)
                for c in reply.citations
            ],
            finish_reason=reply.finish_reason,
            stop_reason=reply.stop_reason,
        )


class Tools(Protocol):
    """What the MCP tools run on. Each raises :class:`ToolError` with the HTTP API's message when it fails."""

    k: int
    """Passages per search when a call does not say."""

    async def search(self, query: str, k: int) -> list[Passage]: ...

    async def fetch(self, passage_id: str) -> Passage: ...

    def ask(self, question: str, max_searches: int | None) -> AsyncIterator[Event]:
        """The search loop's events for ``question``, :class:`Done` last; closing it stops the loop."""
        ...


Query = Annotated[str, Field(min_length=1, max_length=4096, description="what to look for, in a few words")]
PassageId = Annotated[str, Field(min_length=1, max_length=512, description="a passage's id, as search returned it")]
Question = Annotated[str, Field(min_length=1, max_length=32768, description="the question, in full")]
READ_ONLY = ToolAnnotations(read_only_hint=True, open_world_hint=False)


def mcp_server(tools: Tools, *, can_ask: bool = True) -> MCPServer:
    """An MCP server with ``search`` and ``fetch`` over ``tools``, and ``ask`` unless ``can_ask`` is False."""
    server = MCPServer(NAME, instructions=INSTRUCTIONS, log_level="WARNING")

    @server.tool(annotations=READ_ONLY)
    async def search(
        query: Query,
        k: Annotated[int, Field(ge=1, le=MAX_K, description="how many passages")] = tools.k,
    ) -> SearchResults:
        """Search Wikipedia (the wiki-18 passages, a December 2018 dump) for passages about `query`, best first.

        Each result has an `id` (for `fetch`), the article's `title` and `url`, and the passage's `text`."""
        return SearchResults(results=[Result.of(p) for p in await tools.search(query, k)])

    @server.tool(annotations=READ_ONLY)
    async def fetch(id: PassageId) -> FetchedDocument:
        """The whole passage with this `id` (from `search` or `ask`): title, text, url and metadata."""
        return FetchedDocument.of(await tools.fetch(id))

    if not can_ask:
        return server

    @server.tool(annotations=ToolAnnotations(read_only_hint=True, open_world_hint=False, idempotent_hint=False))
    async def ask(
        question: Question,
        ctx: Context,
        max_searches: Annotated[
            int | None, Field(ge=0, description="searches the model may make (0: answer from memory)")
        ] = None,
    ) -> Answer:
        """Ask the ReSearch model: it reasons, searches Wikipedia as often as it needs, and answers.

        Returns the short `answer`, every search it made with the passages it read, and those passages once
        each as `citations`. Progress is reported after each search. Best for questions that combine facts
        (who directed the film that won X; which of two was born first)."""
        async with aclosing(tools.ask(question, max_searches)) as events:
            async for event in events:
                if isinstance(event, SearchDone):
                    found = event.search
                    await ctx.report_progress(
                        found.index + 1, max_searches, f"searched {found.query!r}: {len(found.results)} passages"
                    )
                elif isinstance(event, Done):
                    return Answer.of(event.reply)
        raise ToolError("the search loop ended without its reply")

    return server
