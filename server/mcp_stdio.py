"""``research mcp --index``: the MCP tools ``search`` and ``fetch`` over stdio on a local LanceDB index (no model).

The flags, and ``research mcp --url`` (the tools on a running server, over HTTP), are the
client's: :mod:`research.clients.mcp`. The index is opened here and its embedder loaded
before the first call.
"""

from __future__ import annotations

import argparse

from mcp.server.mcpserver import MCPServer

from research.clients.mcp import client_server, serve_stdio
from research.clients.mcp_tools import mcp_server
from research.retrieval import RetrieverArgs, Searcher
from research.server.mcp_local import IndexTools


def index_server(args: argparse.Namespace) -> MCPServer:
    """``search`` and ``fetch`` on the index at ``--index`` (``--url``: the client's bridge)."""
    if args.index is None:
        return client_server(args)
    retriever = RetrieverArgs(index=args.index).open_retriever()
    return mcp_server(IndexTools(Searcher(retriever, args.search_timeout), args.search_top_k), can_ask=False)


def main(argv: list[str] | None = None) -> int:
    return serve_stdio(argv, index_server)


if __name__ == "__main__":
    raise SystemExit(main())
