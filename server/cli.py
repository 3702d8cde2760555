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
from dataclasses import dataclass
from types import FrameType

import uvicorn

from research.cli import add_fields, from_args, run_command
from research.engines.args import EngineArgs, open_engine, quiet_engine_logs
from research.engines.card import ModelArgs
from research.http_errors.head import Listen
from research.retrieval import RetrieverArgs
from research.server.app import Server, ServerConfig, create_app
from research.server.store import check_store, default_store_url


@dataclass(frozen=True, kw_only=True)
class ServeArgs(Listen, ModelArgs):
    """The model served, under which name, and where."""

    served_model_name: str | None = None
    """the name clients put in 'model' (default: --model)"""
    verbose: bool = False
    """show the engine's own start-up logs (vLLM's INFO lines, progress bars); by default it logs warnings only"""


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
    serve, index, engine_args = from_args(ServeArgs, args), from_args(RetrieverArgs, args), from_args(EngineArgs, args)
    assert serve.model is not None  # a required flag
    config = from_args(
        ServerConfig,
        args,
        model_name=serve.served_model_name or serve.model,
        template=serve.prompt_template,
        protocol=serve.search_protocol,
        api_key=args.api_key or os.environ.get("RESEARCH_API_KEY"),
        store=args.store or default_store_url(),
    )
    log = logging.getLogger("research.server")
    log.info("store: %s, schema version %d", *await check_store(config.store))
    engine = open_engine(serve.model, engine_args)
    log.info("engine: %s on %s, context %s tokens", engine_args.engine, serve.model, engine.max_model_len or "unknown")
    retriever = index.open_retriever()
    log.info("retriever: %s, %d readers", index.source, index.search_workers)
    server = Server(engine, retriever, config)
    log.info(
        "serving %s (protocol %s, template %s) at http://%s:%d/v1",
        *(config.model_name, config.protocol, config.template, serve.host, serve.port),
    )
    uv = Uvicorn(uvicorn.Config(create_app(server), **serve.uvicorn_options(), log_config=None))
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
    add_fields(p, ServeArgs, required={"model"})
    add_fields(p.add_argument_group("passages (--index, --retriever or --web-search)"), RetrieverArgs)
    add_fields(p.add_argument_group("engine"), EngineArgs)
    add_fields(p.add_argument_group("limits and access"), ServerConfig, skip={"model_name", "template", "protocol"})
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    quiet_engine_logs(args.verbose)
    handler = logging.StreamHandler()
    handler.setFormatter(JsonLogs())
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    return run(args)


def run(args: argparse.Namespace, *, ready: Callable[[], None] | None = None, prog: str = "research-serve") -> int:
    """Serve until stopped; a missing model or index, or a bad value, is a one-line error (exit 2)."""
    return run_command(prog, lambda: asyncio.run(serve(args, ready=ready)))


if __name__ == "__main__":
    raise SystemExit(main())
