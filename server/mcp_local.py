"""The MCP tools (:mod:`research.clients.mcp_tools`) on this process's own index and engine, and ``/mcp``.

:class:`IndexTools` searches and fetches from a :class:`~research.retrieval.BatchingRetriever`
(``research mcp --index``); :class:`ServerTools` adds ``ask`` on a :class:`Server`.

``/mcp`` on ``research-serve`` (:func:`mcp_app`) is streamable HTTP, stateless (every call
stands alone, so any replica behind a load balancer can take it), behind the API key of
``/v1``; every message is checked as JSON-RPC 2.0 (:class:`JSONRPCGate`) before the SDK's
transport sees it. ``ask`` is one generation request: it takes a slot as ``/v1/chat/completions``
does (a full server is a tool error naming the limit), runs the same loop on the same
prompt (greedy, as ``research ask`` does), and a caller that cancels or goes away aborts it.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from contextlib import aclosing, contextmanager
from dataclasses import dataclass
from typing import Any

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.streamable_http_manager import StreamableHTTPASGIApp
from mcp.server.transport_security import TransportSecuritySettings
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.types import Message as ASGIMessage

from research.clients.mcp_tools import mcp_server
from research.http_errors import APIError, StrictJSONResponse
from research.retrieval import Searcher
from research.server.chat import ChatCompletionRequest
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
    k: int

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
        return cls(Searcher(server.retriever, cfg.search_timeout), server.search_top_k, server)

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
                job = server.job(body, await server.chat_ids(body.messages, len(question.encode())), "mcp-")
            try:
                async with aclosing(server.run(job)) as events:  # closing it aborts generation
                    async for event in events:
                        yield event
            except Exception as exc:
                raise ToolError(failure(server, job, exc).message) from exc
        finally:
            server.release()


PARSE_ERROR, INVALID_REQUEST, INVALID_PARAMS = -32700, -32600, -32602
"""JSON-RPC 2.0's error codes."""


class Refusal(Exception):
    """A message the gate refuses: its JSON-RPC error code, HTTP status and words."""

    def __init__(self, code: int, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


def _usable_id(message: Any) -> bool:
    """The message has an ``id`` JSON-RPC lets it have: a string or an integer (not a boolean)."""
    sent = message.get("id") if isinstance(message, dict) else None
    return isinstance(sent, str | int) and not isinstance(sent, bool)


def _check(message: Any) -> None:
    """Refuse a message that is not one JSON-RPC 2.0 request, notification or response as MCP takes them."""
    if isinstance(message, list):
        raise Refusal(INVALID_REQUEST, "a batch (a JSON array) is not taken: MCP dropped JSON-RPC batching; send "
                                       "one message a request")  # fmt: skip
    if not isinstance(message, dict):
        raise Refusal(INVALID_REQUEST, "a JSON-RPC message is a JSON object")
    if message.get("jsonrpc") != "2.0":
        raise Refusal(INVALID_REQUEST, 'the message must say "jsonrpc": "2.0"')
    if "id" in message and not _usable_id(message):
        raise Refusal(INVALID_REQUEST, "id must be a string or an integer")
    if "method" in message:
        if not isinstance(message["method"], str):
            raise Refusal(INVALID_REQUEST, "method must be a string")
        if "params" in message and not isinstance(message["params"], dict):
            raise Refusal(INVALID_PARAMS, "params must be an object")
    elif "id" not in message or ("result" in message) == ("error" in message):
        raise Refusal(INVALID_REQUEST, "a message names a method (a request or notification), or answers an id "
                                       "with a result or an error")  # fmt: skip


@dataclass(frozen=True, slots=True)
class JSONRPCGate:
    """Every ``POST /mcp`` body checked as JSON-RPC 2.0 before the SDK's transport reads it: a body that is not
    JSON, a batch, an id that is an object or array, a ``jsonrpc`` other than ``"2.0"``, ``params`` that are not
    an object, or a Content-Type other than JSON get a JSON-RPC error body (400; 415 for the Content-Type),
    never a silent 202 or a plain-text refusal."""

    app: ASGIApp

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        request = Request(scope, receive)
        body = await request.body()
        message: Any = None
        try:
            if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
                raise Refusal(INVALID_REQUEST, "Content-Type must be application/json", 415)
            try:
                message = json.loads(body)
            except ValueError as exc:
                raise Refusal(PARSE_ERROR, f"the body is not JSON ({exc})") from None
            _check(message)
        except Refusal as refusal:
            error = {"code": refusal.code, "message": refusal.message}
            answer = {"jsonrpc": "2.0", "id": message["id"] if _usable_id(message) else None, "error": error}
            return await StrictJSONResponse(answer, status_code=refusal.status)(scope, receive, send)
        sent = False

        async def replay() -> ASGIMessage:  # the body once, as read; then whatever the client sends (a disconnect)
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def mcp_app(server: Server) -> tuple[MCPServer, ASGIApp]:
    """The MCP server over ``server`` and its streamable HTTP endpoint (run ``session_manager`` while serving)."""
    mcp = mcp_server(ServerTools.of(server))
    # No DNS-rebinding check of Host: /mcp is guarded like /v1 (the API key, --allowed-origins for browsers).
    mcp.streamable_http_app(
        streamable_http_path=PATH,
        stateless_http=True,
        transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
    )
    return mcp, JSONRPCGate(StreamableHTTPASGIApp(mcp.session_manager))
