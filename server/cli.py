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
from collections.abc import Callable
from types import FrameType

import uvicorn

from research.cli import add_fields, from_args, run_command
from research.engines.args import EngineArgs, open_engine
from research.engines.card import TemplateChoice, resolve_template
from research.retrieval import BatchingRetriever, add_nprobes_arg, connect
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
    engine_args = from_args(EngineArgs, args)
    config = from_args(
        ServerConfig,
        args,
        model_name=args.served_model_name or args.model,
        template=resolve_template(args.template, args.model),
        api_key=args.api_key or os.environ.get("RESEARCH_API_KEY"),
    )
    engine = open_engine(args.model, engine_args)
    retriever = BatchingRetriever(connect(args.index, nprobes=args.nprobes), workers=args.search_workers)
    server = Server(engine, retriever, config)
    logging.getLogger("research").info(
        "serving %s (template %s, engine %s) with index %s",
        config.model_name,
        config.template,
        engine_args.engine,
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
    p.add_argument(
        "--template",
        choices=TemplateChoice.__args__,
        default="auto",
        help="prompt template the model was trained with (auto: its research.json, else 'instruct' in the name)",
    )
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: loopback only; 0.0.0.0: all)")
    p.add_argument("--port", type=int, default=8000, help="port to listen on (default: 8000)")
    add_fields(p.add_argument_group("engine"), EngineArgs)
    limits = p.add_argument_group("limits and access")
    add_fields(limits, ServerConfig, skip={"model_name", "template"})
    limits.add_argument(
        "--search-workers", type=int, default=4,
        help="index reads run at once (each a batch of queued searches); one stuck read does not stall the rest "
        "(default: 4)",
    )  # fmt: skip
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    handler = logging.StreamHandler()
    handler.setFormatter(JsonLogs())
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    return run(args)


def run(args: argparse.Namespace, *, ready: Callable[[], None] | None = None, prog: str = "research-serve") -> int:
    """Serve until stopped; a missing model or index, or a bad value, is a one-line error (exit 2)."""
    return run_command(prog, lambda: asyncio.run(serve(args, ready=ready)))


if __name__ == "__main__":
    raise SystemExit(main())
