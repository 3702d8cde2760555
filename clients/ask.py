"""``research ask``: put a question to a ReSearch server and watch it search.

    research ask "Who founded the company that makes the Lumet 7?"
    research ask "..." --json          # one JSON object: answer, content, reasoning, searches, citations, usage

Talks to any ``research-serve`` through the ``openai`` SDK (``--url``, or
``$RESEARCH_URL``; default ``http://127.0.0.1:8000/v1``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

import openai


def ask(
    client: openai.OpenAI, question: str, *, model: str | None = None, out: Any = None, **extra: Any
) -> dict[str, Any]:
    """Stream one question; print it as it comes to ``out`` (if given); return the whole reply."""
    model = model or client.models.list().data[0].id
    reply: dict[str, Any] = {"model": model, "reasoning": "", "content": "", "searches": []}
    stream = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": question}],
        stream=True,
        stream_options={"include_usage": True},
        extra_body=extra or None,
    )
    for chunk in stream:
        if chunk.usage is not None:
            reply["usage"] = chunk.usage.model_dump()
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        fields = delta.model_extra or {}
        for search in fields.get("searches") or []:  # the query first, then (same index) the results
            if "query" in search:
                reply["searches"].append({"index": search["index"], "query": search["query"]})
                if out:
                    print(f"\n  [searching: {search['query']}]", file=out)
            if "results" in search:
                reply["searches"][search["index"]]["results"] = search["results"]
                if out:
                    titles = "; ".join(r["title"] for r in search["results"])
                    print(f"\n  [found: {titles}]", file=out)
        for key, text in (("reasoning", fields.get("reasoning")), ("content", delta.content)):
            if text:
                reply[key] += text
                if out:
                    print(text, end="", file=out, flush=True)
        if chunk.choices[0].finish_reason is not None:
            reply["finish_reason"] = chunk.choices[0].finish_reason
            reply["answer"], reply["citations"] = fields.get("answer"), fields.get("citations", [])
    return reply


def _integer(minimum: int) -> Any:
    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


positive, at_least_zero = _integer(1), _integer(0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="research", description="Clients of a ReSearch server.")
    sub = parser.add_subparsers(dest="command", required=True)
    a = sub.add_parser("ask", help="ask a question and watch the model search", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    a.add_argument("question")
    a.add_argument("--url", default=os.environ.get("RESEARCH_URL", "http://127.0.0.1:8000/v1"), help="server /v1 URL")
    a.add_argument("--api-key", default=os.environ.get("RESEARCH_API_KEY", "unused"))
    a.add_argument("--model", help="model name (default: the server's)")
    a.add_argument("--json", action="store_true", help="print one JSON object instead of the live stream")
    a.add_argument("--search-top-k", type=positive, help="passages per search (default: the server's)")
    a.add_argument("--max-searches", type=at_least_zero, help="searches allowed; 0 answers without searching")
    a.add_argument("--temperature", type=float, default=0.0)
    args = parser.parse_args(argv)
    extra = {k: v for k, v in {"search_top_k": args.search_top_k, "max_searches": args.max_searches}.items()
             if v is not None}  # fmt: skip
    extra["temperature"] = args.temperature
    client = openai.OpenAI(base_url=args.url, api_key=args.api_key)
    try:
        reply = ask(client, args.question, model=args.model, out=None if args.json else sys.stdout, **extra)
    except openai.APIError as exc:
        print(f"research ask: error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(reply, ensure_ascii=False))
    else:
        print(f"\n\nanswer: {reply.get('answer')}")
        for c in reply.get("citations", []):
            print(f"  [{c['search_index']}] {c['title']} (id {c['id']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
