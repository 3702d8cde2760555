"""research mcp: the search agent's MCP tools over stdio, for desktop clients (Claude Desktop, Cursor, agents).

    research mcp --url http://gpu-node:8000      # search, fetch and ask, on a running research-serve
    research mcp --index ./wiki18                # search and fetch on a local LanceDB index (no model)

With --url every call goes to the server over its HTTP API (research.clients.AsyncClient),
so this needs only pip install 'research-serve[mcp]': no engine, no index; ask streams and
reports each search as it comes back. With --index the index is opened here and its
embedder loaded before the first call (research.server.mcp_stdio, pip install
'research-serve[index,mcp]'). For MCP over HTTP, use research-serve's own /mcp.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import openai
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

from research.clients.ask import positive
from research.clients.client import AsyncClient
from research.clients.mcp_tools import mcp_server
from research.wire import DEFAULT_K, MAX_K, Event, Passage

PROG = "research mcp"


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
    k: int

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


def parser() -> argparse.ArgumentParser:
    """``research mcp``'s flags, both ways of running it (``--url`` here, ``--index`` in the server package)."""
    p = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--url", help="a running research-serve, with or without /v1: search, fetch and ask")
    where.add_argument("--index", help="a LanceDB passage index (local folder or URI): search and fetch, no ask")
    p.add_argument("--api-key", help="--url's API key (default: $RESEARCH_API_KEY)")
    p.add_argument("--model", help="--url's model (default: the first the server serves)")
    p.add_argument(
        "--search-top-k", type=positive, default=DEFAULT_K, help="passages per search when a call does not say"
    )
    p.add_argument("--search-timeout", type=float, default=10.0, help="--index: seconds a search may take (10)")
    return p


def serve_stdio(argv: list[str] | None, make: Callable[[argparse.Namespace], MCPServer]) -> int:
    """Parse ``research mcp``'s flags, then serve ``make(args)`` on stdin/stdout until the client closes it; logs go
    to stderr (stdout is the protocol). A bad value is one line on stderr and exit 2."""
    p = parser()
    args = p.parse_args(sys.argv[2:] if argv is None else argv)  # sys.argv: research mcp ...
    if args.search_top_k > MAX_K:
        p.error(f"--search-top-k must be at most {MAX_K}")
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    try:
        asyncio.run(make(args).run_stdio_async())
    except (FileNotFoundError, NotADirectoryError, PermissionError, ValueError) as exc:  # research.cli's USER_ERRORS
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    return 0


def client_server(args: argparse.Namespace) -> MCPServer:
    """All three tools on the running server at ``--url``."""
    if args.url is None:
        raise ValueError("--index needs the server package: pip install 'research-serve[index,mcp]'")
    return mcp_server(ClientTools(AsyncClient(args.url, api_key=args.api_key, model=args.model), args.search_top_k))


def main(argv: list[str] | None = None) -> int:
    return serve_stdio(argv, client_server)


if __name__ == "__main__":
    raise SystemExit(main())
