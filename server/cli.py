"""``research-serve``: the OpenAI-compatible ReSearch server.

    research-serve --model agentrl/ReSearch-Qwen-7B-Instruct --index ./wiki18
    research-serve --model ./ckpt --index s3://bucket/wiki18 --engine upstream \\
        --upstream-url http://gpu-node:8000/v1

The model's ``<search>`` queries are answered from the LanceDB index on the
server; clients see the interleaved reasoning stream (see openai_compat.md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Callable
from types import FrameType

import uvicorn

from research.engines.options import add_engine_args, add_template_arg, default_template, open_engine
from research.retrieval import BatchingRetriever, connect
from research.retrieval.cli import add_nprobes_arg
from research.server.app import Server, ServerConfig, create_app


class JsonLogs(logging.Formatter):
    """One JSON object per log line, with the request id when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        line = {"time": self.formatTime(record), "level": record.levelname, "logger": record.name}
        if request_id := getattr(record, "request_id", None):
            line["request_id"] = request_id
        line["message"] = record.getMessage()
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return json.dumps(line)


class Uvicorn(uvicorn.Server):
    """uvicorn that stops gracefully on SIGINT/SIGTERM and then returns.

    Stock uvicorn re-raises the signal once it has shut down, which turns Ctrl-C into a
    KeyboardInterrupt traceback; the app's lifespan has closed the engine by then.
    """

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        self._captured_signals.clear()


async def serve(args: argparse.Namespace, *, ready: Callable[[], None] | None = None) -> None:
    """Open the engine and the index, then serve until stopped; ``ready`` is called once the app listens."""
    engine = open_engine(args)
    retriever = BatchingRetriever(connect(args.index, nprobes=args.nprobes), workers=args.search_workers)
    config = ServerConfig(
        model_name=args.served_model_name or args.model,
        template=args.template if args.template != "auto" else default_template(args.model),
        max_tokens=args.max_tokens,
        max_searches=args.max_searches,
        search_top_k=args.search_top_k,
        max_concurrent_requests=args.max_concurrent_requests,
        max_request_bytes=args.max_request_bytes,
        search_timeout=args.search_timeout,
        stream_write_timeout=args.stream_write_timeout,
        api_key=args.api_key or os.environ.get("RESEARCH_API_KEY"),
        allowed_origins=tuple(o.strip() for o in (args.allowed_origins or "").split(",") if o.strip()),
        open_retriever_routes=args.open_retriever_routes,
    )
    server = Server(engine, retriever, config)
    logging.getLogger("research").info(
        "serving %s (template %s, engine %s) with index %s",
        config.model_name,
        config.template,
        args.engine,
        args.index,
    )
    uv = Uvicorn(uvicorn.Config(create_app(server), host=args.host, port=args.port, log_config=None))
    serving = asyncio.create_task(uv.serve())  # the app's lifespan closes the engine and the retriever
    while ready is not None and not uv.started and not serving.done():
        await asyncio.sleep(0.05)
    if ready is not None and uv.started:
        ready()
    await serving


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="research-serve", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--model", required=True, help="checkpoint path or Hugging Face id")
    p.add_argument("--index", required=True, help="passage index: local folder or LanceDB URI (s3://, db://)")
    add_nprobes_arg(p)
    p.add_argument("--served-model-name", help="the name clients put in 'model' (default: --model)")
    add_template_arg(p)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key", help="require 'Authorization: Bearer KEY' (also $RESEARCH_API_KEY)")
    p.add_argument(
        "--allowed-origins",
        help="comma-separated browser origins allowed to call the API (CORS), e.g. http://localhost:3000 or '*'",
    )
    p.add_argument(
        "--open-retriever-routes",
        action="store_true",
        help="with --api-key, leave /search, /batch_search and /retrieve open (ReSearch's and Search-R1's "
        "retriever clients send no key); /v1/* still needs it",
    )

    add_engine_args(p)

    lim = p.add_argument_group("limits")
    lim.add_argument("--max-tokens", type=int, default=8192, help="largest response budget, model + retrieved tokens")
    lim.add_argument("--max-searches", type=int, help="largest number of searches per response (default: unbounded)")
    lim.add_argument("--search-top-k", type=int, default=5, help="passages per search when a request does not say")
    lim.add_argument("--max-concurrent-requests", type=int, default=256, help="beyond this, 429 with Retry-After")
    lim.add_argument(
        "--search-timeout", type=float, default=10.0, help="seconds a search may take; then the request fails (504)"
    )
    lim.add_argument(
        "--search-workers", type=int, default=4,
        help="index reads run at once (each a batch of queued searches); one stuck read does not stall the rest",
    )  # fmt: skip
    lim.add_argument(
        "--stream-write-timeout", type=float, default=30.0,
        help="seconds a stream waits on a client that stopped reading; then it is closed and its slot freed",
    )  # fmt: skip
    lim.add_argument(
        "--max-request-bytes", type=int, default=4 * 2**20, help="largest request body (default 4 MiB); larger: 413"
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    handler = logging.StreamHandler()
    handler.setFormatter(JsonLogs())
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    return run(args)


def run(args: argparse.Namespace, *, ready: Callable[[], None] | None = None, prog: str = "research-serve") -> int:
    """Serve until stopped; a missing model or index, or a bad value, is a one-line error (exit 2)."""
    try:
        asyncio.run(serve(args, ready=ready))
    except (FileNotFoundError, ValueError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
