"""Shared fixtures: real engines on the scripted tiny model, a real LanceDB index.

Every engine is real: transformers in-process, vLLM (CPU build) in-process, and
a real ``vllm serve`` process on loopback behind the upstream engine. Each is
started once per session, only when a selected test needs it (``vllm serve`` with the
session's first test, so that its start-up overlaps the tests before it).
"""

from __future__ import annotations

import asyncio
import os
import re
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import wait as wait_futures
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from threading import Event

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# research-serve processes the tests start keep their default response store here, not in the home folder
os.environ.setdefault("RESEARCH_STATE_DIR", tempfile.mkdtemp(prefix="research-state-"))

import httpx
import pytest
import pytest_asyncio
import uvicorn

from research.engines.args import open_engine
from research.protocol import Engine
from research.retrieval import BatchingRetriever, Embedder, Passage, PassageIndex, build_index
from research.server.app import Server, ServerConfig, create_app
from research.testbed.dialects import MAX_LENGTH, toy_dialect_model
from research.testbed.models import engine_args, load_tokenizer
from research.testbed.object_store import s3_server
from research.testbed.postgres import Postgres, binaries, postgres_server
from research.testbed.processes import ServerProcess, free_port, start_app, stop
from research.testbed.toy_model import ToyRecipe, toy_model, world_index
from research.testbed.world import World, make_world
from tests.support.scripted import SCRIPT_CORPUS, scripted_model

ENGINES = ("transformers", "vllm", "upstream")


@pytest.fixture(scope="session")
def model_path() -> Path:
    return scripted_model()


@pytest.fixture(scope="session")
def tokenizer(model_path: Path):
    return load_tokenizer(model_path)


@pytest_asyncio.fixture(scope="session")
async def transformers_engine(model_path: Path) -> AsyncIterator[Engine]:
    engine = open_engine(model_path, engine_args("transformers"))
    yield engine
    await engine.close()


@pytest_asyncio.fixture(scope="session")
async def vllm_engine(model_path: Path) -> AsyncIterator[Engine]:
    engine = open_engine(model_path, engine_args("vllm"))
    yield engine
    await engine.close()


def start_vllm_serve(log_dir: Path) -> ServerProcess:
    """A real ``vllm serve`` on the scripted model, on loopback (not waited for).

    Its model worker runs inside its engine core process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``:
    one process fewer to start, ~14 s): the upstream engine sees only its HTTP API.
    """
    port = free_port()
    args = engine_args("vllm").vllm_serve(scripted_model(), port=port, name="scripted", cuda=False)
    health = f"http://127.0.0.1:{port}/health"
    return ServerProcess(args, health, log_dir / "vllm-serve.log", env={"VLLM_ENABLE_V1_MULTIPROCESSING": "0"})


def _needs(item: pytest.Item, fixture: str) -> bool:
    """Whether ``item`` uses ``fixture`` (the upstream engine's tests use ``vllm_serve``)."""
    callspec = getattr(item, "callspec", None)
    upstream = fixture == "vllm_serve" and callspec is not None and "upstream" in callspec.params.values()
    return fixture in item.fixturenames or upstream


VLLM_SERVES = ("vllm_serve", "vllm_replica")
"""The ``vllm serve`` processes a session may need: the upstream engine's, and a second replica beside it (the
scale-out topology's, which its test kills)."""


@pytest.fixture(scope="session", autouse=True)
def early_vllm_serve(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, ServerProcess]]:
    """Each ``vllm serve`` a selected test will need, started with the session's first test: its ~40 s start-up
    (imports, mostly one core) overlaps the tests before the first one that uses it."""
    started = {
        name: start_vllm_serve(tmp_path_factory.mktemp(name))
        for name in VLLM_SERVES
        if any(_needs(item, name) for item in request.session.items)
    }
    yield started
    for server in started.values():
        server.stop()


def _vllm_serve(
    name: str, early: dict[str, ServerProcess], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """The early ``vllm serve`` called ``name`` (or one started now), once it answers."""
    server = early.get(name) or start_vllm_serve(tmp_path_factory.mktemp(name))
    try:
        server.wait_healthy()
        yield server
    finally:
        if server is not early.get(name):
            server.stop()


@pytest.fixture(scope="session")
def vllm_serve(
    early_vllm_serve: dict[str, ServerProcess], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """The upstream engine's ``vllm serve``."""
    yield from _vllm_serve("vllm_serve", early_vllm_serve, tmp_path_factory)


@pytest.fixture(scope="session")
def vllm_server(vllm_serve: ServerProcess) -> str:
    """Its ``/v1`` base URL."""
    return vllm_serve.health.removesuffix("/health") + "/v1"


@pytest.fixture(scope="module")
def vllm_replica(
    early_vllm_serve: dict[str, ServerProcess], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """A second ``vllm serve`` on the scripted model, for a test that may kill it."""
    yield from _vllm_serve("vllm_replica", early_vllm_serve, tmp_path_factory)


@pytest_asyncio.fixture(scope="session")
async def upstream_engine(vllm_server: str, tokenizer) -> AsyncIterator[Engine]:
    from research.engines.upstream import UpstreamEngine

    engine = UpstreamEngine(vllm_server, tokenizer, timeout=120)  # a stalled upstream fails a test, not the suite
    await engine.check_health()  # lists the upstream's model: its context window is known from the first test on
    yield engine
    await engine.close()


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> Engine:
    """Each real engine in turn, all on the same scripted checkpoint."""
    return request.getfixturevalue(f"{request.param}_engine")


async def in_flight(engine: Engine) -> int:
    """Requests the engine is still working on, read from the engine itself."""
    from research.engines.hf import TransformersEngine
    from research.engines.upstream import UpstreamEngine
    from research.engines.vllm_engine import VLLMEngine

    if isinstance(engine, TransformersEngine):  # one decode at a time on its one worker: is it free?
        probe = engine._worker.submit(lambda: None)
        done, _ = await asyncio.to_thread(wait_futures, [probe], 0.2)
        return int(not done)
    if isinstance(engine, VLLMEngine):
        return engine.engine.output_processor.get_num_unfinished_requests()
    assert isinstance(engine, UpstreamEngine)
    metrics = httpx.get(engine.base_url.removesuffix("/v1") + "/metrics").text
    gauges = re.findall(r"^vllm:num_requests_(?:running|waiting)\{.*\} (\S+)$", metrics, re.M)
    return int(sum(float(g) for g in gauges))


async def _wait_idle(engine: Engine, timeout: float = 60.0) -> int:
    deadline = time.monotonic() + timeout
    while (n := await in_flight(engine)) and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    return n


@pytest.fixture
def wait_idle():
    """``await wait_idle(engine)``: poll until the engine has no request left; the last count."""
    return _wait_idle


@pytest.fixture(scope="session")
def embedder() -> Embedder:
    """The real all-MiniLM-L6-v2, loaded offline from its PyPI package."""
    return Embedder("sentence-transformers/all-MiniLM-L6-v2", device="cpu")


@pytest.fixture(scope="session")
def script_index(tmp_path_factory: pytest.TempPathFactory, embedder: Embedder) -> PassageIndex:
    """A real LanceDB table on disk over the scripted model's fictional corpus."""
    passages = [Passage(p["id"], p["contents"]) for p in SCRIPT_CORPUS]
    return build_index(tmp_path_factory.mktemp("lance") / "index", passages, embedder=embedder, batch_size=3)


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """A PostgreSQL server on loopback (Debian's package; the test skips, saying why, where it is not installed)."""
    if binaries() is None:
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql; .ci/setup does as root)")
    with postgres_server() as server:
        yield server


@pytest.fixture(scope="session")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """An S3 server on loopback (moto's) with the bucket ``research``; the environment that points LanceDB at it."""
    with s3_server(tmp_path_factory.mktemp("s3"), "research") as env:
        yield env


@pytest.fixture
def held(script_index: PassageIndex, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Event, Event]]:
    """The scripted index's searches wait until ``release`` is set (60 s at most); ``reading`` says one started."""
    search, reading, release = script_index.search, Event(), Event()

    def waiting(queries, **kwargs):
        reading.set()
        release.wait(60)
        return search(queries, **kwargs)

    monkeypatch.setattr(script_index, "search", waiting)
    yield reading, release
    release.set()


@pytest_asyncio.fixture
async def retriever(script_index: PassageIndex) -> AsyncIterator[BatchingRetriever]:
    retriever = BatchingRetriever(script_index)
    yield retriever
    await retriever.close()


# -- a live OpenAI-compatible server per engine (tests/server, tests/clients) --

MODEL = "scripted"


@dataclass
class Live:
    """A running server: its base URL (``.../v1``), its state and its engine."""

    url: str
    server: Server
    engine: Engine


async def start(server: Server) -> tuple[uvicorn.Server, asyncio.Task[None], str]:
    return await start_app(create_app(server))


@asynccontextmanager
async def serving(engine: Engine, index: PassageIndex, **config) -> AsyncIterator[Live]:
    """Serve ``engine`` on a free loopback port for the duration of the block."""
    retriever = BatchingRetriever(index)
    server = Server(engine, retriever, ServerConfig(**{"model_name": MODEL, "template": "instruct", **config}))
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


# -- the toy ReSearch model and the toy world's index (end-to-end tests) --


@pytest.fixture(scope="session")
def toy_recipe() -> ToyRecipe:
    return ToyRecipe()


@pytest.fixture(scope="session")
def toy_model_path(toy_recipe: ToyRecipe) -> Path:
    """The toy ReSearch model (built on first use, about 8 minutes on two cores; cached)."""
    return toy_model(toy_recipe)


@pytest.fixture(scope="session")
def toy_world(toy_recipe: ToyRecipe) -> World:
    return make_world(toy_recipe.seed, chains=toy_recipe.chains)


@pytest.fixture(scope="session")
def toy_index(toy_world: World) -> PassageIndex:
    """A real LanceDB index of every toy-world passage (held-out entities included)."""
    return world_index(toy_world)


@pytest_asyncio.fixture(scope="session")
async def toy_transformers_engine(toy_model_path: Path) -> AsyncIterator[Engine]:
    engine = open_engine(toy_model_path, engine_args("transformers"))
    yield engine
    await engine.close()


@pytest_asyncio.fixture(scope="session")
async def toy_vllm_engine(toy_model_path: Path) -> AsyncIterator[Engine]:
    engine = open_engine(toy_model_path, engine_args("vllm", max_model_len=2048))
    yield engine
    await engine.close()


@pytest_asyncio.fixture(scope="session")
async def toy_dialects_engine() -> AsyncIterator[Engine]:
    """The three-protocol toy (:mod:`research.testbed.dialects`, built from the toy model once; cached) on vLLM."""
    engine = open_engine(toy_dialect_model(), engine_args("vllm", max_model_len=MAX_LENGTH))
    yield engine
    await engine.close()
