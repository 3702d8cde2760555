"""research-serve in front of a retriever that answers one search with 100,000 passages (~56 MB) (issue #49).

    python bench/hostile_retriever.py                   # toy model on the transformers engine
    python bench/hostile_retriever.py --engine vllm --rounds 8

The retriever runs in a process of its own: the toy world's index behind Search-R1's
``/retrieve`` (``research-index serve``'s app), which answers normally until told to send
the huge reply. ``research-serve --retriever`` searches it. Three phases, each ``--rounds``
chat requests one after another, while a probe times ``GET /v1/models`` every 20 ms on
another connection: the retriever well-behaved (the baseline), every search answered with
the huge reply, and well-behaved again. Prints one table: the chat statuses, the probe's
p50/p99/max and the server's memory (RSS, its process and children) at the end of each phase
and at its peak. Before issue #49 the huge reply stalled every client for ~90 s and left
5 GB held; now it is dropped at ``--retriever-max-bytes`` and parsed off the event loop.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
import psutil

from research.testbed.processes import free_port, launched
from research.testbed.serve import MODEL_NAME, toy_server

HUGE = 100_000
"""Passages in the huge reply."""


def retriever(port: int) -> None:
    """The toy world's index as Search-R1's retriever, answering with :data:`HUGE` passages once told to."""
    import uvicorn
    from fastapi import FastAPI, Request
    from fastapi.responses import Response, StreamingResponse

    from research.retrieval import BatchingRetriever
    from research.retrieval.service import create_app
    from research.testbed.toy_model import ToyRecipe, world_index
    from research.testbed.world import make_world

    recipe = ToyRecipe()
    index = world_index(make_world(recipe.seed, chains=recipe.chains))
    passage = json.dumps({"document": {"id": "x", "contents": '"X"\n' + "word " * 100}, "score": 0.5}).encode()
    huge = [b'{"result": [[', b",".join([passage] * HUGE), b"]]}"]
    state = {"huge": False}
    app = FastAPI()

    @app.middleware("http")
    async def misbehave(request: Request, call_next):
        if request.url.path == "/mode":
            state["huge"] = (await request.json())["huge"]
            return Response(status_code=204)
        if state["huge"]:
            return StreamingResponse(iter(huge), media_type="application/json")
        return await call_next(request)

    app.mount("/", create_app(BatchingRetriever(index)))
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


def rss_mb(pid: int) -> float:
    proc = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)]) / 2**20


async def phase(base: str, pid: int, questions: list[str], rounds: int) -> dict[str, object]:
    """``rounds`` chat requests in turn, probed and sampled meanwhile."""
    probes: list[float] = []
    peak = rss_mb(pid)
    statuses: Counter[str] = Counter()
    done = asyncio.Event()

    async def probe(http: httpx.AsyncClient) -> None:
        nonlocal peak
        while not done.is_set():
            started = time.perf_counter()
            assert (await http.get(f"{base}/v1/models")).status_code == 200
            probes.append(time.perf_counter() - started)
            peak = max(peak, rss_mb(pid))
            await asyncio.sleep(0.02)

    async with httpx.AsyncClient(timeout=300) as http, httpx.AsyncClient(timeout=300) as other:
        probing = asyncio.create_task(probe(other))
        for i in range(rounds):
            ask = {"model": MODEL_NAME, "messages": [{"role": "user", "content": questions[i % len(questions)]}]}
            answer = await http.post(f"{base}/v1/chat/completions", json={**ask, "temperature": 0})
            statuses[f"{answer.status_code} {answer.json().get('error', {}).get('code') or 'ok'}"] += 1
        done.set()
        await probing
    p = statistics.quantiles(probes, n=100, method="inclusive")
    return {
        "chat": ", ".join(f"{n}x {s}" for s, n in statuses.items()),
        "probe p50 ms": f"{1000 * p[49]:.1f}",
        "probe p99 ms": f"{1000 * p[98]:.1f}",
        "probe max ms": f"{1000 * max(probes):.1f}",
        "RSS end MB": f"{rss_mb(pid):.0f}",
        "RSS peak MB": f"{peak:.0f}",
    }


async def measure(base: str, control: str, pid: int, questions: list[str], rounds: int) -> None:
    rows = {}
    for name, huge in (("well-behaved", False), (f"{HUGE:,} passages a reply", True), ("well-behaved again", False)):
        httpx.post(control, json={"huge": huge})
        rows[name] = await phase(base, pid, questions, rounds)
    print(f"\nresearch-serve --retriever (Search-R1 API); {rounds} chat requests a phase, probe every 20 ms\n")
    first = next(iter(rows.values()))
    print("| phase | " + " | ".join(first) + " |")
    print("| --- |" + " --- |" * len(first))
    for name, row in rows.items():
        print(f"| {name} | " + " | ".join(str(v) for v in row.values()) + " |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engine", choices=["vllm", "transformers"], default="transformers")
    parser.add_argument("--rounds", type=int, default=6, help="chat requests a phase")
    args = parser.parse_args()
    retriever_port, port = free_port(), free_port()
    server = multiprocessing.get_context("spawn").Process(target=retriever, args=(retriever_port,), daemon=True)
    server.start()
    retriever_url = f"http://127.0.0.1:{retriever_port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            httpx.get(f"{retriever_url}/health")
            break
        except httpx.TransportError:
            time.sleep(0.5)
    flags, questions = toy_server(args.rounds, retriever=f"{retriever_url}/retrieve")
    serve = [str(Path(sys.executable).parent / "research-serve"), *flags, "--port", str(port), "--engine", args.engine]
    log = Path(tempfile.mkdtemp(prefix="hostile-")) / "research-serve.log"
    print(f"server log: {log}", flush=True)
    try:
        with launched(serve, f"http://127.0.0.1:{port}/health", log, timeout=900) as proc:
            asyncio.run(measure(f"http://127.0.0.1:{port}", f"{retriever_url}/mode", proc.pid, questions, args.rounds))
    finally:
        server.terminate()
        server.join()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
