"""research mcp: the search agent's MCP tools over stdio, for desktop clients (Claude Desktop, Cursor, agents).

    research mcp --url http://gpu-node:8000      # search, fetch and ask, on a running research-serve
    research mcp --index ./wiki18                # search and fetch on a local LanceDB index (no model)

With --url every call goes to the server over its HTTP API (research.clients.AsyncClient),
so this needs only pip install 'research-serve[mcp]': no engine, no index; ask streams and
reports each search as it comes back. With --index the index is opened here and its
embedder loaded before the first call. For MCP over HTTP, use research-serve's own /mcp.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import openai
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

from research.cli import run_command
from research.clients import AsyncClient
from research.clients.ask import positive
from research.server.mcp_tools import Tools, mcp_server
from research.wire import MAX_K, Event, Passage


@contextmanager
def api_errors(client: AsyncClient) -> Iterator[None]:
    """The server's error as the MCP tool error with its message (or one naming the server that did not answer)."""
    try:
        yield
    except openai.APIConnectionError as exc:
        raise ToolError(f"the ReSearch server at {client.openai.base_url} did not answer ({exc})") from exc
    except openai.APIError as exc:
        body = exc.body if isinstance(exc.body, dict) else {}
        raise ToolError(body.get("message") or exc.message) from exc


@dataclass(frozen=True, slots=True)
class ClientTools:
    """The tools on a running ``research-serve``, over its HTTP API."""

    client: AsyncClient
    default_k: int

    async def search(self, query: str, k: int) -> list[Passage]:
        with api_errors(self.client):
            [passages] = await self.client.search([query], k=k)
        return passages

    async def fetch(self, passage_id: str) -> Passage:
        with api_errors(self.client):
            return await self.client.passage(passage_id)

    async def ask(self, question: str, max_searches: int | None) -> AsyncIterator[Event]:
        with api_errors(self.client):
            async for event in self.client.stream(question, temperature=0, max_searches=max_searches):
                yield event


def local_tools(index: str, *, default_k: int, search_timeout: float) -> Tools:
    """``search`` and ``fetch`` on the LanceDB index at ``index``, its embedder loaded now."""
    from research.retrieval import RetrieverArgs, Searcher
    from research.server.mcp_local import IndexTools

    retriever = RetrieverArgs(index=index).open_retriever()
    return IndexTools(Searcher(retriever, search_timeout), default_k)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="research mcp", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--url", help="a running research-serve, with or without /v1: search, fetch and ask")
    where.add_argument("--index", help="a LanceDB passage index (local folder or URI): search and fetch, no ask")
    p.add_argument("--api-key", help="--url's API key (default: $RESEARCH_API_KEY)")
    p.add_argument("--model", help="--url's model (default: the first the server serves)")
    p.add_argument("--search-top-k", type=positive, default=5, help="passages per search when a call does not say")
    p.add_argument("--search-timeout", type=float, default=10.0, help="--index: seconds a search may take (10)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Serve MCP on stdin/stdout until the client closes it; logs go to stderr (stdout is the protocol)."""
    p = parser()
    args = p.parse_args(sys.argv[2:] if argv is None else argv)  # sys.argv: research mcp ...
    if args.search_top_k > MAX_K:
        p.error(f"--search-top-k must be at most {MAX_K}")
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)

    def serve() -> None:
        asyncio.run(server(args).run_stdio_async())

    return run_command("research mcp", serve)


def server(args: argparse.Namespace) -> MCPServer:
    """The MCP server the flags ask for: all three tools on ``--url``, search and fetch on ``--index``."""
    if args.url:
        client = AsyncClient(args.url, api_key=args.api_key, model=args.model)
        return mcp_server(ClientTools(client, args.search_top_k))
    tools = local_tools(args.index, default_k=args.search_top_k, search_timeout=args.search_timeout)
    return mcp_server(tools, can_ask=False)


if __name__ == "__main__":
    raise SystemExit(main())
