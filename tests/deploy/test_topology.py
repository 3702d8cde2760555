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
from pathlib import Path

import openai
import pytest

from research.retrieval import Passage, build_index
from tests.conftest import MODEL
from tests.support.scripted import SCRIPT_CORPUS, SCRIPT_QUESTION

sys.path.insert(0, str(Path(__file__).parents[2] / "deploy"))
from topology import ask, kill_when, scaled_out, streams

pytestmark = pytest.mark.skipif(
    shutil.which("nginx") is None, reason="no nginx here: apt-get install nginx-light to run the topology's tests"
)


@pytest.fixture(scope="module")
def topology(vllm_serve, vllm_replica, model_path, embedder, s3, tmp_path_factory):
    work = tmp_path_factory.mktemp("topology")
    with pytest.MonkeyPatch.context() as patch:
        for name, value in s3.items():
            patch.setenv(name, value)  # LanceDB in this process reads them as the fronts will
        passages = [Passage(p["id"], p["contents"]) for p in SCRIPT_CORPUS]
        index = build_index("s3://research/script", passages, embedder=embedder).uri
    serve = [sys.executable, "-m", "research.server.cli", "--model", str(model_path), "--index", index]
    serve += ["--engine", "upstream", "--served-model-name", MODEL, "--template", "instruct"]

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


async def test_a_replica_killed_mid_stream_loses_no_request(topology):
    running, work = topology
    async with openai.AsyncOpenAI(base_url=running.url, api_key="none") as client:
        reference = {SCRIPT_QUESTION: await ask(client, MODEL, SCRIPT_QUESTION)}
        replica = running.replicas[1]
        kill = kill_when(running, replica, "vllm:num_requests_running", 4)
        outcomes = await streams(client, MODEL, reference, 32, 16, kill)
        assert replica.proc.poll() is not None  # it was killed
        assert outcomes == {"completed": 32}, outcomes  # every stream as before: no gap, no repeated token
        resumed = sum(log.read_text().count("resuming from them") for log in work.glob("front-*.log"))
        assert resumed >= 1  # some generations were on the killed replica, mid-stream
        assert await streams(client, MODEL, reference, 4, 4) == {"completed": 4}  # the survivor serves on


async def test_a_front_killed_ends_only_its_own_streams(topology):
    running, _ = topology
    async with openai.AsyncOpenAI(base_url=running.url, api_key="none") as client:
        reference = {SCRIPT_QUESTION: await ask(client, MODEL, SCRIPT_QUESTION)}
        kill = kill_when(running, running.fronts[0], "research_requests_running", 2)
        outcomes = await streams(client, MODEL, reference, 32, 16, kill)
        assert set(outcomes) <= {"completed", "failed"} and outcomes["failed"] >= 1, outcomes  # none hung
        assert sum(outcomes.values()) == 32
        await asyncio.sleep(2.5)  # nginx's fail_timeout
        assert await streams(client, MODEL, reference, 8, 4) == {"completed": 8}  # the other front serves
