"""The scale-out topology on one machine: vLLM replicas and research-serve fronts, each set behind nginx.

    python deploy/topology.py                  # the toy model: 2 replicas, 2 fronts, the index on S3 (moto)
    python deploy/topology.py --replicas 3 --fronts 1 --work runs/topology   # keep the logs

What runs, every process on loopback::

    clients ─> nginx ─> research-serve --engine upstream (x fronts) ─> nginx ─> vllm serve (x replicas)
                               └─> the LanceDB index at s3://research/toy-world (moto's S3 server)

The fronts are stateless: each runs the search loop, sends token ids to the replicas through
their balancer, and resumes a generation whose replica died on another one (``--upstream-resumes``).
The index is read through LanceDB's own ``s3://`` support, configured the way the AWS tools are
(``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ...), with no code path of ours. The S3 server is moto's
(``moto[server]``, a dev dependency): no S3-compatible server installs here without a download.
nginx is Debian's (``apt-get install nginx-light``). ``tests/deploy/test_topology.py`` and
``bench/failover.py`` bring it up through this module; the README's "Scaling out" shows the same
topology across machines.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import signal
import sys
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai

from research.testbed.object_store import s3_server
from research.testbed.processes import ServerProcess, free_port

NGINX = """\
worker_processes 1;
pid {folder}/nginx.pid;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    upstream backends {{
{servers}
        keepalive 64;
    }}
    server {{
        listen 127.0.0.1:{port};
        client_body_temp_path {folder};
        location / {{
            proxy_pass http://backends;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;          # server-sent events pass as they come
            proxy_request_buffering off;
            proxy_read_timeout 600s;
            # A replica that refuses or drops a request before answering is skipped. Generation requests
            # are safe to send again (a dropped one was aborted where it ran), hence non_idempotent.
            proxy_next_upstream error timeout http_502 http_503 non_idempotent;
        }}
    }}
}}
"""


def nginx(backends: list[int], folder: Path) -> ServerProcess:
    """nginx balancing loopback ``backends`` (ports), started in ``folder``; its health URL is a backend's."""
    if shutil.which("nginx") is None:
        raise RuntimeError("nginx is not installed: apt-get install nginx-light")
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    servers = "\n".join(f"        server 127.0.0.1:{b} max_fails=1 fail_timeout=2s;" for b in backends)
    conf = folder / "nginx.conf"
    conf.write_text(NGINX.format(folder=folder, servers=servers, port=port))
    command = ["nginx", "-p", str(folder), "-c", str(conf), "-e", str(folder / "error.log"), "-g", "daemon off;"]
    return ServerProcess(command, f"http://127.0.0.1:{port}/health", folder / "nginx.log")


@dataclass
class Topology:
    """The running topology: the fronts' balancer URL (the clients' ``/v1``), the replicas', every process."""

    url: str
    upstream: str
    replicas: list[ServerProcess]
    fronts: list[ServerProcess]
    stack: ExitStack

    def kill(self, server: ServerProcess) -> None:
        """kill -9 a replica or a front, with everything it started."""
        os.killpg(server.proc.pid, signal.SIGKILL)
        server.proc.wait()

    def restart(self, i: int, *, front: bool = False) -> ServerProcess:
        """Start replica ``i`` (or front ``i``) again, as before and on its port (not waited for)."""
        servers = self.fronts if front else self.replicas
        old = servers[i]
        servers[i] = _start(self.stack, old.args, old.port, old.log.with_suffix(".restarted.log"), old.env)
        return servers[i]


def _start(stack: ExitStack, command: list[str], port: int, log: Path, env: Mapping[str, str] | None) -> ServerProcess:
    return stack.enter_context(ServerProcess(command, f"http://127.0.0.1:{port}/health", log, env=env))


def start_replicas(
    command: Callable[[int], list[str]], n: int, work: Path, stack: ExitStack, env: Mapping[str, str]
) -> list[ServerProcess]:
    """``n`` replicas, ``command(port)`` each (not waited for), stopped with ``stack``."""
    return [_start(stack, command(port := free_port()), port, work / f"replica-{i}.log", env) for i in range(n)]


@contextmanager
def scaled_out(
    replicas: list[ServerProcess],
    front_command: Callable[[int, str], list[str]],
    work: Path,
    *,
    fronts: int = 2,
    env: Mapping[str, str] | None = None,
) -> Iterator[Topology]:
    """``replicas`` (running or starting) behind nginx, ``fronts`` of ``front_command(port, upstream_url)``
    behind another; yields once every process answers, stops what it started when the block ends."""
    with ExitStack() as stack:
        upstream = stack.enter_context(nginx([r.port for r in replicas], work / "nginx-replicas"))
        upstream_url = upstream.health.removesuffix("/health") + "/v1"
        ports = [free_port() for _ in range(fronts)]
        started = [
            _start(stack, front_command(port, upstream_url), port, work / f"front-{i}.log", env)
            for i, port in enumerate(ports)
        ]
        front = stack.enter_context(nginx(ports, work / "nginx-fronts"))
        for server in [*replicas, *started, upstream, front]:  # a balancer answers once a backend does
            server.wait_healthy(900)
        yield Topology(front.health.removesuffix("/health") + "/v1", upstream_url, list(replicas), started, stack)


def metric(server: ServerProcess, name: str) -> float:
    """The sum of a Prometheus metric's samples on ``server``'s ``/metrics`` (vLLM's and research-serve's)."""
    text = httpx.get(server.health.removesuffix("/health") + "/metrics", timeout=10).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if re.match(rf"{name}(\{{| )", line))


async def ask(client: Any, model: str, question: str) -> str:
    """One streamed chat completion at temperature 0, through the ``openai`` SDK's ``client``: the reasoning
    and content deltas joined, everything the stream showed."""
    shown = []
    stream = await client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": question}], temperature=0, stream=True
    )
    async with stream:  # closed however the stream ends (a replica killed, the caller cancelled)
        async for chunk in stream:
            for choice in chunk.choices:
                shown += [choice.delta.model_extra.get("reasoning_content") or "", choice.delta.content or ""]
    return "".join(shown)


HUNG = 120.0
"""Seconds after which a stream that has not ended counts as hung."""


async def streams(
    client: Any, model: str, reference: dict[str, str], requests: int, clients: int,
    beside: Awaitable[None] | None = None,
) -> Counter[str]:  # fmt: skip
    """``requests`` streamed questions from ``reference`` (question: what it showed before) by ``clients``
    concurrent streams, ``beside`` running alongside; counts of ``completed`` (as before), ``different``,
    ``failed`` (the connection went: a clear error) and ``hung``."""
    slots = asyncio.Semaphore(clients)
    questions = list(reference)

    async def one(question: str) -> str:
        async with slots:
            try:
                shown = await asyncio.wait_for(ask(client, model, question), HUNG)
            except TimeoutError:
                return "hung"
            except (openai.APIError, httpx.TransportError):
                return "failed"
            return "completed" if shown == reference[question] else "different"

    asked = [one(questions[i % len(questions)]) for i in range(requests)]
    outcomes = await asyncio.gather(*asked, *([beside] if beside else []))
    return Counter(o for o in outcomes if o is not None)


async def kill_when(topology: Topology, server: ServerProcess, gauge: str, at_least: float) -> None:
    """kill -9 ``server`` once its metric ``gauge`` reads ``at_least`` (requests running, say)."""
    async with asyncio.timeout(HUNG):
        while await asyncio.to_thread(metric, server, gauge) < at_least:
            await asyncio.sleep(0.05)
    topology.kill(server)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--replicas", type=int, default=2, help="vllm serve replicas (default: 2)")
    p.add_argument("--fronts", type=int, default=2, help="research-serve --engine upstream fronts (default: 2)")
    p.add_argument("--work", type=Path, help="logs and nginx configs (default: a temporary folder)")
    p.add_argument("--store", help="the fronts' shared store: postgresql://USER@HOST/DB (default: SQLite in --work)")
    args = p.parse_args()
    if args.replicas < 1 or args.fronts < 1:
        p.error("--replicas and --fronts must be at least 1")
    import tempfile
    import time

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # stop everything on SIGTERM as on Ctrl-C
    with ExitStack() as outer:
        work = args.work or Path(outer.enter_context(tempfile.TemporaryDirectory(prefix="topology-")))
        work.mkdir(parents=True, exist_ok=True)
        store = args.store or f"sqlite:///{work / 'store.sqlite3'}"
        with toy_topology(work, store, replicas=args.replicas, fronts=args.fronts) as (topology, questions):
            print(f"\nThe front: {topology.url} (model 'research'); the replicas' balancer: {topology.upstream}")
            print("Held-out questions to ask:", *questions, sep="\n  ")
            print(f"Logs in {work}. Stop with Ctrl-C.", flush=True)
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                return 0
    return 0


@contextmanager
def toy_topology(work: Path, store: str, *, replicas: int = 2, fronts: int = 2) -> Iterator[tuple[Topology, list[str]]]:
    """The toy model's topology, its world's index on moto's S3, the fronts sharing ``store``; (topology, held-out
    questions)."""
    from research.testbed.models import engine_args
    from research.testbed.serve import MODEL_NAME, toy_server
    from research.testbed.toy_model import ToyRecipe, index_world
    from research.testbed.world import make_world

    flags, questions = toy_server()
    model = flags[flags.index("--model") + 1]
    engine = engine_args(max_model_len=2048)
    with ExitStack() as stack:
        env = stack.enter_context(s3_server(work / "s3", "research"))
        os.environ.update(env)  # this process writes the index there
        recipe = ToyRecipe()
        index = index_world(make_world(recipe.seed, chains=recipe.chains), "all", "s3://research/toy-world").uri
        at = flags.index("--index")
        flags[at + 1] = index
        serve = [sys.executable, "-m", "research.server.cli", *flags, "--engine", "upstream", "--store", store]

        def replica(port: int) -> list[str]:
            return engine.vllm_serve(model, port=port, name=MODEL_NAME, cuda=False)

        def front(port: int, upstream: str) -> list[str]:
            return [*serve, "--upstream-url", upstream, "--host", "127.0.0.1", "--port", str(port)]

        cpu = {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}  # 1 GiB KV cache, one process
        started = start_replicas(replica, replicas, work, stack, {**env, **cpu})
        topology = stack.enter_context(scaled_out(started, front, work, fronts=fronts, env=env))
        yield topology, questions


if __name__ == "__main__":
    raise SystemExit(main())
