"""What grows with requests: the server's Python allocations under the soak's traffic, by where they were made.

    python bench/growth.py                        # toy model on vLLM (CPU build), 64 clients, 10 minutes
    python bench/growth.py --clients 16 --minutes 3 --engine transformers

Runs ``research-serve`` in this process (as the command does, with bench/soak.py's settings)
and the soak's mixed traffic in a process of its own. ``tracemalloc`` traces every Python
allocation from the end of the warm-up; snapshots are taken after the warm-up, half-way,
and at the end once the traffic has stopped and the last slow reader has been let go
(nothing running). Prints the memory allocated since the warm-up and still held, half-way
and at the end, and the allocation sites that grew most from the warm-up to the end, with
their growth at half-way: a structure that grows with requests grows in both halves and is
still there when nothing runs.
(The engine's own processes, and memory that is not Python objects, are not traced: see
bench/soak.py for the whole RSS.)
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import signal
import time
import tracemalloc
from pathlib import Path

from soak import serve_command, traffic

from research.server import cli as server_cli
from research.testbed.processes import free_port

ROOT = f"{Path(__file__).resolve().parents[1]}/"
WRITE_TIMEOUT = 5.0
NOT_OURS = [tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, "<frozen importlib._bootstrap*")]


def snapshot() -> tracemalloc.Snapshot:
    gc.collect()
    return tracemalloc.take_snapshot().filter_traces(NOT_OURS)


def mb(n: int) -> str:
    return f"{n / 2**20:+.2f}"


async def measure(args: argparse.Namespace) -> None:
    port = free_port()
    serve, questions = serve_command(port, args.engine, WRITE_TIMEOUT, search_timeout=10)
    listening = asyncio.Event()
    serving = asyncio.create_task(server_cli.serve(server_cli.parser().parse_args(serve[1:]), ready=listening.set))
    await asyncio.wait([serving, asyncio.create_task(listening.wait())], return_when=asyncio.FIRST_COMPLETED)
    if serving.done():
        serving.result()  # it failed to start: raise its error
    with traffic(f"http://127.0.0.1:{port}", questions, args.clients, WRITE_TIMEOUT):
        await asyncio.sleep(args.warmup)
        tracemalloc.start(args.frames)
        started = time.monotonic()
        warm = snapshot()
        await asyncio.sleep(30 * args.minutes)
        half = snapshot()
        await asyncio.sleep(max(0.0, started + 60 * args.minutes - time.monotonic()))
    await asyncio.sleep(4 * WRITE_TIMEOUT + 5)  # dropped clients and slow readers are let go
    end = snapshot()
    tracemalloc.stop()
    os.kill(os.getpid(), signal.SIGINT)  # the server stops as on Ctrl-C
    await serving

    total = [sum(s.size for s in snap.statistics("filename")) for snap in (half, end)]
    print(
        f"\ngrowth: {args.clients} clients for {args.minutes:g} min against research-serve ({args.engine}, toy model)"
    )
    print(f"Python memory allocated since the warm-up and still held, MB: {total[0] / 2**20:.1f} half-way, "
          f"{total[1] / 2**20:.1f} at the end (idle)\n")  # fmt: skip
    at_half = {stat.traceback: stat.size_diff for stat in half.compare_to(warm, "traceback")}
    grown = [stat for stat in end.compare_to(warm, "traceback") if stat.size_diff > 0][: args.top]
    print(
        f"{'MB to the end':>14}{'MB half-way':>13}{'blocks +':>10}  allocated at (our innermost frame <- the innermost)"
    )
    for stat in grown:
        ours = [f for f in stat.traceback if f.filename.startswith(ROOT) and "/.venv/" not in f.filename]
        where = dict.fromkeys(f"{f.filename.removeprefix(ROOT)}:{f.lineno}" for f in [*ours[-1:], stat.traceback[-1]])
        print(f"{mb(stat.size_diff):>14}{mb(at_half.get(stat.traceback, 0)):>13}{stat.count_diff:>+10}  "
              f"{' <- '.join(where)}")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--minutes", type=float, default=10, help="traced minutes, after the warm-up")
    parser.add_argument("--warmup", type=float, default=60, help="seconds of traffic before tracing starts")
    parser.add_argument("--engine", choices=["vllm", "transformers"], default="vllm")
    parser.add_argument("--frames", type=int, default=12, help="frames kept per allocation")
    parser.add_argument("--top", type=int, default=15, help="allocation sites listed")
    args = parser.parse_args()
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    asyncio.run(measure(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
