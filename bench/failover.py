"""No request lost when a replica dies: the scale-out topology under streaming clients, kill -9 in turn.

    python bench/failover.py                       # 16 clients, 48 requests a phase, the toy model
    python bench/failover.py --clients 32 --requests 96

Brings up ``deploy/topology.py``'s toy topology (2 ``vllm serve`` replicas and 2 ``research-serve
--engine upstream`` fronts behind nginx, the index on S3) and asks the held-out questions at
temperature 0 through the ``openai`` SDK, streaming. Each answer (reasoning and content as
streamed) is compared with the one the same question got before any kill: a gap or a repeated
token would show as a difference. The phases:

1. ``replica kill``: once a replica has 4 requests running, it is killed -9. Goal: every request
   completes, identical (its front resumes the generation on the other replica).
2. ``replica back``: the killed replica is started again; then a phase with no kill. Goal: every
   request completes and both replicas serve some.
3. ``front kill``: once a front has requests running, it is killed -9. Its streams end with an
   error (their TCP connection is gone); the rest complete.
4. ``after``: a phase with no kill on the surviving front. Goal: every request completes.

Prints a table: completed (identical), different, failed with an error, hung (no end in 120 s).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import openai

sys.path.insert(0, str(Path(__file__).parents[1] / "deploy"))
from topology import Topology, ask, kill_when, metric, streams, toy_topology

MODEL = "research"


async def run(topology: Topology, questions: list[str], requests: int, clients: int) -> dict[str, Counter[str]]:
    async with openai.AsyncOpenAI(base_url=topology.url, api_key="none", timeout=120) as client:
        reference = {q: await ask(client, MODEL, q) for q in questions}
        rows = {}
        running = "vllm:num_requests_running"
        replica = kill_when(topology, topology.replicas[1], running, 4)
        rows["replica kill"] = await streams(client, MODEL, reference, requests, clients, replica)
        replica = topology.restart(1)
        await asyncio.to_thread(replica.wait_healthy, 900)
        await asyncio.sleep(3)  # nginx's fail_timeout: the balancer tries the replica again
        before = [metric(r, "vllm:request_success_total") for r in topology.replicas]
        rows["replica back"] = await streams(client, MODEL, reference, requests, clients)
        after = [metric(r, "vllm:request_success_total") for r in topology.replicas]
        rows["replica back"]["served by both"] = int(all(a > b for a, b in zip(after, before, strict=True)))
        front = kill_when(topology, topology.fronts[0], "research_requests_running", 2)
        rows["front kill"] = await streams(client, MODEL, reference, requests, clients, front)
        rows["after"] = await streams(client, MODEL, reference, requests, clients)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", type=int, default=16, help="concurrent streams (default: 16)")
    p.add_argument("--requests", type=int, default=48, help="requests a phase (default: 48)")
    args = p.parse_args()
    begin = time.perf_counter()
    with (
        tempfile.TemporaryDirectory(prefix="failover-") as tmp,
        toy_topology(Path(tmp), f"sqlite:///{tmp}/store.sqlite3") as (topology, questions),
    ):
        rows = asyncio.run(run(topology, questions, args.requests, args.clients))
        resumed = sum(log.read_text().count("resuming from them") for log in Path(tmp).glob("front-*.log"))
    print(f"\n{args.clients} clients, {args.requests} requests a phase, {time.perf_counter() - begin:.0f} s in all; "
          f"{resumed} generation(s) resumed on another replica")  # fmt: skip
    print("| phase | completed (identical) | different | failed with an error | hung | note |")
    print("| --- | ---: | ---: | ---: | ---: | --- |")
    for name, row in rows.items():
        note = {"replica back": f"both replicas served: {'yes' if row['served by both'] else 'NO'}"}.get(name, "")
        print(f"| {name} | {row['completed']} | {row['different']} | {row['failed']} | {row['hung']} | {note} |")


if __name__ == "__main__":
    main()
