"""A real uvicorn server on loopback per engine, serving the scripted model over a real LanceDB index."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import pytest
import pytest_asyncio
import uvicorn

from research.engines.base import Engine
from research.retrieval import BatchingRetriever, PassageIndex
from research.server.app import Server, ServerConfig, create_app

ENGINES = ("transformers", "vllm", "upstream")
MODEL = "scripted"


@dataclass
class Live:
    """A running server: its base URL (``.../v1``), its state and its engine."""

    url: str
    server: Server
    engine: Engine


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def start(server: Server) -> tuple[uvicorn.Server, asyncio.Task[None], str]:
    port = free_port()
    config = uvicorn.Config(create_app(server), host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    uv = uvicorn.Server(config)
    task = asyncio.create_task(uv.serve())
    while not uv.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.02)
    return uv, task, f"http://127.0.0.1:{port}"


async def stop(uv: uvicorn.Server, task: asyncio.Task[None]) -> None:
    uv.should_exit = True
    await task


@asynccontextmanager
async def serving(engine: Engine, index: PassageIndex, **config) -> AsyncIterator[Live]:
    """Serve ``engine`` on a free loopback port for the duration of the block."""
    retriever = BatchingRetriever(index)
    server = Server(engine, retriever, ServerConfig(model_name=MODEL, template="instruct", **config))
    uv, task, base = await start(server)
    try:
        yield Live(f"{base}/v1", server, engine)
    finally:
        await stop(uv, task)
        await retriever.close()


@pytest_asyncio.fixture(scope="session")
async def live_transformers(transformers_engine: Engine, script_index: PassageIndex) -> AsyncIterator[Live]:
    async with serving(transformers_engine, script_index, max_searches=4) as live:
        yield live


@pytest_asyncio.fixture(scope="session")
async def live_vllm(vllm_engine: Engine, script_index: PassageIndex) -> AsyncIterator[Live]:
    async with serving(vllm_engine, script_index) as live:
        yield live


@pytest_asyncio.fixture(scope="session")
async def live_upstream(upstream_engine: Engine, script_index: PassageIndex) -> AsyncIterator[Live]:
    async with serving(upstream_engine, script_index) as live:
        yield live


@pytest.fixture(params=ENGINES)
def live(request: pytest.FixtureRequest) -> Live:
    """The server on each real engine in turn."""
    return request.getfixturevalue(f"live_{request.param}")
