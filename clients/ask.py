"""``research ask``: put a question to a ReSearch server and watch it search.

    research ask "Who founded the company that makes the Lumet 7?"
    research ask "..." --json          # one JSON object: answer, content, reasoning, searches, citations, usage

Talks to any ``research-serve`` through :class:`research.clients.Client` (``--url``, or
``$RESEARCH_URL``; default ``http://127.0.0.1:8000``).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, TextIO

import openai

from research.clients.client import Client
from research.wire import Content, Done, Reasoning, Reply, SearchDone, SearchIssued


def show(client: Client, question: str, out: TextIO, **options: Any) -> Reply:
    """Stream one question to ``out`` as it comes (reasoning, searches, passages found); return the :class:`Reply`."""
    for event in client.stream(question, **options):
        match event:
            case Reasoning(text) | Content(text):
                print(text, end="", file=out, flush=True)
            case SearchIssued(query=query):
                print(f"\n  [searching: {query}]", file=out)
            case SearchDone(search):
                print(f"\n  [found: {'; '.join(p.title for p in search.results)}]", file=out)
            case Done(reply):
                return reply
    raise AssertionError("the stream ended without its reply")


def _integer(minimum: int) -> Any:
    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


positive, at_least_zero = _integer(1), _integer(0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="research",
        description="Clients of a ReSearch server.",
        epilog="research mcp --help: its search tools for MCP clients, over stdio (pip install 'research-serve[mcp]')",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    a = sub.add_parser("ask", help="ask a question and watch the model search", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    a.add_argument("question", help="the question, in quotes")
    a.add_argument("--url", help="the server, with or without /v1 (default: $RESEARCH_URL, then http://127.0.0.1:8000)")
    a.add_argument("--api-key", help="the server's key (default: $RESEARCH_API_KEY)")
    a.add_argument("--model", help="model name (default: the server's)")
    a.add_argument("--json", action="store_true", help="print one JSON object instead of the live stream")
    a.add_argument("--search-top-k", type=positive, help="passages per search (default: the server's)")
    a.add_argument("--max-searches", type=at_least_zero, help="searches allowed; 0 answers without searching")
    a.add_argument("--temperature", type=float, default=0.0, help="sampling temperature (default: 0, greedy)")
    args = parser.parse_args(argv)
    options = {"search_top_k": args.search_top_k, "max_searches": args.max_searches, "temperature": args.temperature}
    try:
        with Client(args.url, api_key=args.api_key, model=args.model) as client:
            reply = (
                client.ask(args.question, **options)
                if args.json
                else show(client, args.question, sys.stdout, **options)
            )
    except openai.APIError as exc:
        print(f"research ask: error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(reply.model_dump_json())
    else:
        print(f"\n\nanswer: {reply.answer}")
        for c in reply.citations:
            print(f"  [{c.search_index}] {c.title} (id {c.id})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
