"""The MCP tools (:mod:`research.server.mcp_tools`) on this process's own index and engine, and ``/mcp``.

:class:`IndexTools` searches and fetches from a :class:`~research.retrieval.BatchingRetriever`
(``research mcp --index``); :class:`ServerTools` adds ``ask`` on a :class:`Server`.

``/mcp`` on ``research-serve`` (:func:`mcp_app`) is streamable HTTP, stateless (every call
stands alone, so any replica behind a load balancer can take it), behind the API key of
``/v1``. ``ask`` is one generation request: it takes a slot as ``/v1/chat/completions``
does (a full server is a tool error naming the limit), runs the same loop on the same
prompt (greedy, as ``research ask`` does), and a caller that cancels or goes away aborts it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import aclosing, contextmanager
from dataclasses import dataclass

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.streamable_http_manager import StreamableHTTPASGIApp
from mcp.server.transport_security import TransportSecuritySettings
from starlette.types import ASGIApp

from research.http_errors import APIError
from research.retrieval import Searcher
from research.server.chat import ChatCompletionRequest
from research.server.mcp_tools import mcp_server
from research.server.requests import Message
from research.server.routing import failure
from research.server.serving import Server
from research.wire import Event, Passage

PATH = "/mcp"


@contextmanager
def tool_errors() -> Iterator[None]:
    """An API error as the MCP tool error with its message."""
    try:
        yield
    except APIError as error:
        raise ToolError(error.message) from error


@dataclass(frozen=True, slots=True)
class IndexTools:
    """``search`` and ``fetch`` on a retriever, failing as its HTTP routes do (:class:`Searcher`)."""

    searcher: Searcher
    default_k: int

    async def search(self, query: str, k: int) -> list[Passage]:
        with tool_errors():
            [passages] = await self.searcher(None, [query], k)
        return passages

    async def fetch(self, passage_id: str) -> Passage:
        with tool_errors():
            return await self.searcher.fetch(None, passage_id)


@dataclass(frozen=True, slots=True)
class ServerTools(IndexTools):
    """The tools on ``server``'s own retriever and engine."""

    server: Server

    @classmethod
    def of(cls, server: Server) -> ServerTools:
        cfg = server.config
        return cls(Searcher(server.retriever, cfg.search_timeout), cfg.search_top_k, server)

    async def ask(self, question: str, max_searches: int | None) -> AsyncIterator[Event]:
        server, cfg = self.server, self.server.config
        with tool_errors():
            server.admit()
        try:
            with tool_errors():
                body = ChatCompletionRequest(
                    model=cfg.model_name,
                    messages=[Message(role="user", content=question)],
                    temperature=0.0,
                    max_searches=max_searches,
                )
                job = server.job(body, await server.chat_ids(body.messages, len(question.encode())), "mcp")
            try:
                async with aclosing(server.run(job)) as events:  # closing it aborts generation
                    async for event in events:
                        yield event
            except Exception as exc:
                raise ToolError(failure(job, exc).message) from exc
        finally:
            server.release()


def mcp_app(server: Server) -> tuple[MCPServer, ASGIApp]:
    """The MCP server over ``server`` and its streamable HTTP endpoint (run ``session_manager`` while serving)."""
    mcp = mcp_server(ServerTools.of(server))
    # No DNS-rebinding check of Host: /mcp is guarded like /v1 (the API key, --allowed-origins for browsers).
    mcp.streamable_http_app(
        streamable_http_path=PATH,
        stateless_http=True,
        transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
    )
    return mcp, StreamableHTTPASGIApp(mcp.session_manager)
