"""The scale-out topology (``deploy/topology.py``) on the scripted model, every piece a real process.

Two ``vllm serve`` replicas (the session's upstream one and a second) behind nginx; two
``research-serve --engine upstream`` fronts behind another nginx; the index on S3 (moto's
server), read through LanceDB's own ``s3://`` support. Clients are the ``openai`` SDK,
streaming. A replica killed -9 mid-stream loses no request (its generations resume on the
other, token for token); a front killed -9 ends its own streams with an error and nothing
else. ``bench/failover.py`` measures the same on the toy model, 48 requests a phase, with the
killed replica brought back.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from pathlib import Path

import openai
import psutil
import pytest

from research.retrieval import Passage, build_index
from research.testbed.postgres import binaries
from research.testbed.processes import ServerProcess
from tests.conftest import MODEL
from tests.support.scripted import SCRIPT_CORPUS, SCRIPT_QUESTION

sys.path.insert(0, str(Path(__file__).parents[2] / "deploy"))
from topology import ask, metric, scaled_out, streams

pytestmark = pytest.mark.skipif(
    shutil.which("nginx") is None, reason="no nginx here: apt-get install nginx-light to run the topology's tests"
)


LEASE = 2.0
"""The fronts' ``--store-lease``: a killed front's background responses are failed within it (and one upkeep)."""


@pytest.fixture(scope="module")
def topology(request, vllm_serve, vllm_replica, model_path, embedder, s3, tmp_path_factory):
    work = tmp_path_factory.mktemp("topology")
    # the fronts share a PostgreSQL store (a SQLite file where PostgreSQL is not installed)
    store = request.getfixturevalue("postgres").url if binaries() else f"sqlite:///{work / 'store.sqlite3'}"
    with pytest.MonkeyPatch.context() as patch:
        for name, value in s3.items():
            patch.setenv(name, value)  # LanceDB in this process reads them as the fronts will
        passages = [Passage(p["id"], p["contents"]) for p in SCRIPT_CORPUS]
        index = build_index("s3://research/script", passages, embedder=embedder).uri
    serve = [sys.executable, "-m", "research.server.cli", "--model", str(model_path), "--index", index]
    serve += ["--engine", "upstream", "--served-model-name", MODEL, "--template", "instruct"]
    serve += ["--store", store, "--store-lease", str(LEASE)]

    def front(port: int, upstream: str) -> list[str]:
        return [*serve, "--upstream-url", upstream, "--port", str(port)]

    with scaled_out([vllm_serve, vllm_replica], front, work, fronts=2, env=s3) as running:
        yield running, work


async def test_the_front_answers_as_one_in_process_server(topology, live_upstream):
    running, _ = topology
    async with (
        openai.AsyncOpenAI(base_url=running.url, api_key="none") as front,
        openai.AsyncOpenAI(base_url=live_upstream.url, api_key="none") as single,
    ):
        through_front = await ask(front, MODEL, SCRIPT_QUESTION)
        assert through_front == await ask(single, MODEL, SCRIPT_QUESTION)
        assert "</search> <result>" in through_front and "Marxville" in through_front  # searched S3, answered


def engine_core(replica: ServerProcess) -> psutil.Process:
    """The replica's vLLM engine core: suspended, it generates nothing while its API server still answers."""
    (core,) = [c for c in psutil.Process(replica.proc.pid).children(recursive=True) if c.name() == "VLLM::EngineCore"]
    return core


@contextmanager
def suspended(cores: list[psutil.Process]) -> Iterator[None]:
    """The engine ``cores`` suspended for the block and resumed after it whatever happens: one of them is the
    session's upstream, which the tests after these need generating."""
    for core in cores:
        core.suspend()
    try:
        yield
    finally:
        for core in cores:
            with suppress(psutil.NoSuchProcess):  # the replica the test killed
                core.resume()


async def until(condition) -> None:
    async with asyncio.timeout(120):
        while not await asyncio.to_thread(condition):
            await asyncio.sleep(0.05)


@asynccontextmanager
async def held(running, client, reference) -> AsyncIterator[asyncio.Task]:
    """32 streams by 16 clients (the task), started with every engine suspended: enters once the first 16 are all
    held in the fronts; a stream still open when the block ends is cancelled."""
    asked = asyncio.create_task(streams(client, MODEL, reference, 32, 16))
    try:
        await until(lambda: sum(metric(f, "research_requests_running") for f in running.fronts) == 16)
        yield asked
    finally:
        asked.cancel()
        with suppress(asyncio.CancelledError):
            await asked


async def settled(server: ServerProcess, name: str) -> float:
    """``server``'s metric ``name`` once it reads the same twice 0.2 s apart (its engine suspended, the outputs
    already sent have reached its API server)."""
    last = None
    while (now := await asyncio.to_thread(metric, server, name)) != last:
        last = now
        await asyncio.sleep(0.2)
    return now


async def mid_generation(core: psutil.Process, replica: ServerProcess) -> None:
    """Runs the suspended engine ``core`` 20 ms at a time until ``replica`` holds a request that has generated tokens
    and not finished (a request running after a step has sampled at least one), and leaves it suspended there."""
    generated = metric(replica, "vllm:generation_tokens_total")
    async with asyncio.timeout(120):
        while True:
            core.resume()
            time.sleep(0.02)  # blocking: the slice is the engine's alone, whatever the event loop has to do
            core.suspend()
            tokens = await settled(replica, "vllm:generation_tokens_total")
            if tokens > generated and metric(replica, "vllm:num_requests_running") >= 1:
                return


async def test_a_background_response_is_streamed_through_another_front_and_failed_when_its_front_dies(topology):
    """Created through front A, polled and streamed to its end through front B; a second one, held by front A
    (every engine suspended), is failed within the lease once A is killed -9, and B's stream of it ends."""
    running, _ = topology
    a, b = (openai.AsyncOpenAI(base_url=f"{f.health.removesuffix('/health')}/v1", api_key="none", max_retries=0)
            for f in running.fronts)  # fmt: skip
    ask = {"model": MODEL, "input": SCRIPT_QUESTION, "temperature": 0, "background": True}
    async with a, b:
        done = await a.responses.create(**ask)
        events = [event async for event in await b.responses.retrieve(done.id, stream=True)]
        assert [e.sequence_number for e in events] == list(range(len(events)))
        assert events[-1].type == "response.completed" and "Marxville" in events[-1].response.output_text
        assert (await b.responses.retrieve(done.id)).output_text == events[-1].response.output_text

        cores = [engine_core(r) for r in running.replicas if r.proc.poll() is None]
        with suspended(cores):
            held = await a.responses.create(**ask)
            assert (await b.responses.retrieve(held.id)).status in ("queued", "in_progress")
            following = asyncio.create_task(_events(b, held.id))
            running.kill(running.fronts[0])
            killed = time.monotonic()
            async with asyncio.timeout(60):
                while (await b.responses.retrieve(held.id)).status != "failed":
                    await asyncio.sleep(0.1)
            failed_after = time.monotonic() - killed
        assert failed_after < LEASE + LEASE / 3 + 5, failed_after  # the lease, one upkeep, slack for two cores
        assert (await asyncio.wait_for(following, 30))[-1] == "response.failed"
    running.restart(0, front=True).wait_healthy(600)  # the tests below use both fronts


async def _events(client: openai.AsyncOpenAI, id: str) -> list[str]:
    return [event.type async for event in await client.responses.retrieve(id, stream=True)]


async def test_a_replica_killed_mid_stream_loses_no_request(topology):
    """The replica is killed while it holds generations that have streamed tokens and not finished: with every
    engine suspended the first 16 streams wait in the fronts; the replica's engine runs in short slices until it
    holds such a generation, is suspended there, and is killed."""
    running, work = topology
    replica = running.replicas[1]
    cores = [engine_core(r) for r in running.replicas]
    async with openai.AsyncOpenAI(base_url=running.url, api_key="none") as client:
        reference = {SCRIPT_QUESTION: await ask(client, MODEL, SCRIPT_QUESTION)}
        with suspended(cores):
            async with held(running, client, reference) as asked:
                await mid_generation(cores[1], replica)
                running.kill(replica)
                cores[0].resume()
                outcomes = await asked
        assert outcomes == {"completed": 32}, outcomes  # every stream as before: no gap, no repeated token
        resumed = sum(log.read_text().count("resuming from them") for log in work.glob("front-*.log"))
        assert resumed >= 1
        assert await streams(client, MODEL, reference, 4, 4) == {"completed": 4}  # the survivor serves on


async def test_a_front_killed_ends_only_its_own_streams(topology):
    """With every engine suspended, the first 16 streams are all held in the fronts; one front is killed."""
    running, _ = topology
    cores = [engine_core(r) for r in running.replicas if r.proc.poll() is None]
    async with openai.AsyncOpenAI(base_url=running.url, api_key="none") as client:
        reference = {SCRIPT_QUESTION: await ask(client, MODEL, SCRIPT_QUESTION)}
        with suspended(cores):
            async with held(running, client, reference) as asked:
                on_it = metric(running.fronts[0], "research_requests_running")
                assert on_it >= 1  # the balancer spread them
                running.kill(running.fronts[0])
                for core in cores:
                    core.resume()
                outcomes = await asked
        assert outcomes == {"completed": 32 - on_it, "failed": on_it}, outcomes  # its own streams, an error each
        await asyncio.sleep(2.5)  # nginx's fail_timeout
        assert await streams(client, MODEL, reference, 8, 4) == {"completed": 8}  # the other front serves
