"""How long one huge prompt stalls everyone else: probe latency while 3 MB prompts are tokenised.

    python bench/prompt_stall.py                  # toy model, transformers engine, CPU
    python bench/prompt_stall.py --engine vllm

Starts ``research-serve`` on the toy model, times ``GET /v1/models`` every 20 ms, first
alone (the baseline), then while 1 and then 4 chat requests with a 3 MB message are in
flight (each is read, rendered and tokenised, then refused: 400, over the context).
Prints the probe's p50 and max for each and the max against the baseline's. The server
tokenises such prompts on one thread of their own; before that, four at once stalled
every request for about a second (one: about 0.2 s).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

from research.testbed.processes import free_port, launched
from research.testbed.serve import MODEL_NAME, toy_server

HUGE = {"model": MODEL_NAME, "messages": [{"role": "user", "content": "lorem " * 500_000}]}


async def probe(http: httpx.AsyncClient, base: str, stop: asyncio.Event) -> list[float]:
    seconds = []
    while not stop.is_set():
        started = time.perf_counter()
        await http.get(f"{base}/v1/models")
        seconds.append(time.perf_counter() - started)
        await asyncio.sleep(0.02)
    return seconds


async def measure(base: str) -> list[tuple[str, list[float], list[int]]]:
    rows = []
    async with httpx.AsyncClient(timeout=300) as http:
        for n in (0, 1, 4):
            stop = asyncio.Event()
            timing = asyncio.create_task(probe(http, base, stop))
            if n:
                replies = await asyncio.gather(*(http.post(f"{base}/v1/chat/completions", json=HUGE) for _ in range(n)))
            else:
                await asyncio.sleep(3)
                replies = []
            stop.set()
            rows.append((f"{n} huge prompt(s) in flight" if n else "idle (baseline)", await timing,
                         [r.status_code for r in replies]))  # fmt: skip
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engine", choices=["transformers", "vllm"], default="transformers")
    args = parser.parse_args()
    flags, _ = toy_server()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    serve = [str(Path(sys.executable).parent / "research-serve"), *flags, "--engine", args.engine, "--port", str(port)]
    log = Path(tempfile.mkdtemp(prefix="prompt-stall-")) / "research-serve.log"
    with launched(serve, f"{base}/health", log, timeout=900, env={"VLLM_CPU_KVCACHE_SPACE": "1"}):
        rows = asyncio.run(measure(base))
    baseline = max(rows[0][1])
    print(f"\n{'probe GET /v1/models':<30}{'samples':>8}{'p50 ms':>9}{'max ms':>9}{'max/baseline':>14}  replies")
    for name, seconds, statuses in rows:
        p50, top = 1000 * statistics.median(seconds), 1000 * max(seconds)
        print(f"{name:<30}{len(seconds):>8}{p50:>9.1f}{top:>9.1f}{max(seconds) / baseline:>14.1f}  {statuses}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
