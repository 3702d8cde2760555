"""The latency storing a response adds, on SQLite and on PostgreSQL.

    python bench/store_latency.py                  # 200 writes a store, 30 requests an arm
    python bench/store_latency.py --requests 60

A stored Responses request writes its row twice on its own path (as it starts: a 503 then if
the store is down; as it ends, with its output), and a background one writes its events as
they come. For each store (a SQLite file; PostgreSQL, Debian's package, started by the bench
on loopback; skipped where it is not installed) the bench prints:

- **the writes**: the two writes of one stored response, timed around the store's own calls
  (:meth:`ResponseRecords.start` and :meth:`ResponseRecords.end`) with the response object of a
  real toy-model run (its searches and passages: what a real response stores), p50/p95 of each
  and of both;
- **end to end**: the same question through the ``openai`` SDK against ``research-serve``
  (in-process, vLLM CPU, the toy model), ``store: true`` and ``store: false`` alternating,
  median and p95 of each, their difference and ratio (same run, same server).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from research.engines.args import open_engine, quiet_engine_logs
from research.retrieval import BatchingRetriever
from research.server.app import Server, ServerConfig, create_app
from research.server.records import as_item
from research.server.response_items import ResponseObject
from research.testbed.acceptance import held_out
from research.testbed.models import engine_args
from research.testbed.postgres import binaries, postgres_server
from research.testbed.processes import start_app, stop
from research.testbed.toy_model import ToyRecipe, toy_model, world_index
from research.testbed.world import make_world


def quantiles(ms: list[float]) -> tuple[float, float]:
    """p50 and p95 in milliseconds."""
    ordered = sorted(ms)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


async def writes(server: Server, sample: ResponseObject, question: str, n: int) -> dict[str, list[float]]:
    """``n`` stored responses' two writes, each timed."""
    times: dict[str, list[float]] = {"start": [], "end": [], "both": []}
    own = [as_item({"role": "user", "content": question})]
    for i in range(n):
        started = sample.model_copy(update={"id": f"resp_bench{i}_{time.time_ns()}", "status": "in_progress",
                                            "output": []})  # fmt: skip
        t0 = time.perf_counter()
        await server.records.start("", started, own, own)
        t1 = time.perf_counter()
        await server.records.end("", sample.model_copy(update={"id": started.id}), own)
        t2 = time.perf_counter()
        times["start"].append(1000 * (t1 - t0))
        times["end"].append(1000 * (t2 - t1))
        times["both"].append(1000 * (t2 - t0))
    return times


async def measure(engine, index, store: str, questions: list[str], requests: int, n_writes: int) -> list[str]:
    from openai import AsyncOpenAI

    config = ServerConfig(model_name="toy", template="base", store=store, search_top_k=ToyRecipe().top_k)
    server = Server(engine, BatchingRetriever(index), config)
    uv, task, url = await start_app(create_app(server))
    rows = []
    try:
        client = AsyncOpenAI(base_url=f"{url}/v1", api_key="none", timeout=600)
        ask = {"model": "toy", "temperature": 0, "max_output_tokens": 512}
        sample = await client.responses.create(input=questions[0], **ask)
        stored = ResponseObject.model_validate(sample.model_dump(exclude_none=True))
        times = await writes(server, stored, questions[0], n_writes)
        for name, ms in times.items():
            p50, p95 = quantiles(ms)
            rows.append(f"| {store.split(':')[0]} | write: {name} | {p50:.2f} | {p95:.2f} | {len(ms)} |")
        arms: dict[bool, list[float]] = {True: [], False: []}
        for i in range(requests):
            for keep in (True, False) if i % 2 else (False, True):
                t0 = time.perf_counter()
                await client.responses.create(input=questions[i % len(questions)], store=keep, **ask)
                arms[keep].append(1000 * (time.perf_counter() - t0))
        for keep, ms in arms.items():
            p50, p95 = quantiles(ms)
            rows.append(f"| {store.split(':')[0]} | request, store: {str(keep).lower()} | {p50:.1f} | {p95:.1f} | "
                        f"{len(ms)} |")  # fmt: skip
        added = statistics.median(arms[True]) - statistics.median(arms[False])
        ratio = statistics.median(arms[True]) / statistics.median(arms[False])
        rows.append(f"| {store.split(':')[0]} | request: median added, ratio | {added:.1f} | {ratio:.3f} | |")
        await client.close()
    finally:
        await stop(uv, task)
        await server.close()
    return rows


async def main(args: argparse.Namespace) -> None:
    quiet_engine_logs()
    recipe = ToyRecipe()
    world = make_world(recipe.seed, chains=recipe.chains)
    index = world_index(world)
    questions = [q.question for q in held_out(world, 8)]
    rows = []
    with ExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        stores = [f"sqlite:///{folder / 'store.sqlite3'}"]
        if binaries() is not None:
            stores.append(stack.enter_context(postgres_server()).url)
        else:
            print("PostgreSQL is not installed (apt-get install postgresql): SQLite only")
        for store in stores:
            engine = open_engine(toy_model(recipe), engine_args("vllm", max_model_len=2048))
            rows += await measure(engine, index, store, questions, args.requests, args.writes)
    print("\n## Latency a stored response adds (ms)\n")
    print("| store | what | p50 | p95 | n |\n| --- | --- | --- | --- | --- |")
    print("\n".join(rows))


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=30, help="requests an arm (store true, store false)")
    p.add_argument("--writes", type=int, default=200, help="stored responses' writes timed a store")
    asyncio.run(main(p.parse_args()))
