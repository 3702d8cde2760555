"""Soak: many careless and hostile clients against one ``research-serve`` for minutes; nothing may leak or wedge.

    python bench/soak.py                      # toy model on vLLM (CPU build), 64 clients, 10 minutes
    python bench/soak.py --clients 16 --minutes 2

Each client loops over a mix of requests: plain replies, full streams, streams dropped
after a few events, slow readers (1 byte/s on a tiny receive window), bad requests and
over-large bodies. Meanwhile a probe times ``GET /v1/models`` every half second, first
on the idle server (the baseline) and then under load. Prints a table:

* every request kind: count, and responses that were not what that kind must get
  (a 5xx, a hang, a wrong 4xx) — the "unexpected" column must be 0;
* probe latency p50 / max: idle, under load, and under load while a huge prompt is being
  tokenised (an event loop stalled by one request shows there as a max in seconds);
* the server's memory (its process and vLLM's engine processes) after warm-up and at
  the end, and the growth in percent;
* the server's gauges once the clients stop: requests running (must be 0).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import random
import socket
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import psutil

from research.testbed.processes import free_port, launched
from research.testbed.serve import MODEL_NAME, toy_server

BIN = Path(sys.executable).parent
ASK = {"model": MODEL_NAME, "max_tokens": 256}
LONG = {"model": MODEL_NAME, "prompt": "Once upon a time", "max_tokens": 1000, "temperature": 2.0, "stream": True}
BAD = [
    (b'{"model": "research", "messages": [', 400),
    (json.dumps({**ASK, "messages": [{"role": "user", "content": "q"}], "seed": 2**64}).encode(), 400),
    (json.dumps({**ASK, "messages": [{"role": "user", "content": "q"}], "top_k": 10**30}).encode(), 400),
    (json.dumps({"model": MODEL_NAME, "prompt": [10**9, -1]}).encode(), 400),
    (b'{"model": "research", "messages": [{"role": "user", "content": "\\ud800"}]}', 400),
    (json.dumps({**ASK, "model": "gpt-4", "messages": [{"role": "user", "content": "q"}]}).encode(), 404),
    (json.dumps({**ASK, "messages": []}).encode(), 400),
]
WEIGHTS = {"reply": 30, "stream": 30, "dropped": 15, "slow": 3, "bad": 15, "huge-body": 3, "huge-prompt": 4}
"""Each request kind's share of the traffic."""
KINDS = tuple(WEIGHTS)


class Soak:
    def __init__(self, base: str, questions: list[str], write_timeout: float) -> None:
        self.base, self.questions, self.write_timeout = base, questions, write_timeout
        self.counts: Counter[str] = Counter()
        self.unexpected: Counter[str] = Counter()
        self.examples: dict[str, str] = {}
        self.huge_in_flight = 0
        """Huge prompts being read, rendered and tokenised right now (the probe tells its samples apart by it)."""

    def bad(self, kind: str, what: str) -> None:
        self.unexpected[kind] += 1
        self.examples.setdefault(kind, what[:300])

    def chat(self, **extra) -> dict:
        return {**ASK, "messages": [{"role": "user", "content": random.choice(self.questions)}], **extra}

    async def one(self, http: httpx.AsyncClient, kind: str) -> None:
        self.counts[kind] += 1
        url = f"{self.base}/v1/chat/completions"
        if kind == "reply":
            r = await http.post(url, json=self.chat())
            if r.status_code not in (200, 429):
                self.bad(kind, f"{r.status_code} {r.text}")
        elif kind in ("stream", "dropped"):
            keep = 10**9 if kind == "stream" else random.randint(1, 6)
            async with http.stream("POST", url, json=self.chat(stream=True)) as r:
                if r.status_code == 429:
                    return
                lines = []
                async for line in r.aiter_lines():
                    if line:
                        lines.append(line)
                    if len(lines) >= keep:
                        break
            if kind == "stream" and (
                r.status_code != 200 or lines[-1] != "data: [DONE]" or '"error"' in "".join(lines)
            ):
                self.bad(kind, f"{r.status_code} {lines[-3:]}")
        elif kind == "slow":
            await self.slow_reader()
        elif kind == "bad":
            body, status = random.choice(BAD)
            endpoint = "completions" if b'"prompt"' in body else "chat/completions"
            r = await http.post(
                f"{self.base}/v1/{endpoint}", content=body, headers={"content-type": "application/json"}
            )
            if r.status_code not in (status, 429) or "error" not in r.json():  # 429: every slot is taken
                self.bad(kind, f"{r.status_code} {r.text}")
        elif kind == "huge-body":  # over the 4 MiB limit: 413 before it is read
            r = await http.post(url, content=b" " * (5 * 2**20), headers={"content-type": "application/json"})
            if r.status_code != 413:
                self.bad(kind, f"{r.status_code} {r.text}")
        elif kind == "huge-prompt":  # under the body limit, far over the context: tokenised off the loop, then 400
            self.huge_in_flight += 1
            try:
                r = await http.post(url, json=self.chat(messages=[{"role": "user", "content": "lorem " * 500_000}]))
            finally:
                self.huge_in_flight -= 1
            if r.status_code not in (400, 429):
                self.bad(kind, f"{r.status_code} {r.text}")

    async def slow_reader(self) -> None:
        """A long stream read at 1 byte/s through a tiny receive window: the server must let it go, not hang."""
        host, port = self.base.removeprefix("http://").split(":")
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
        reader, writer = await asyncio.open_connection(sock=sock, limit=1)
        body = json.dumps(LONG).encode()
        writer.write(
            b"POST /v1/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            + f"content-length: {len(body)}\r\n\r\n".encode()
            + body
        )
        await writer.drain()
        try:
            for _ in range(int(self.write_timeout * 4)):
                if not await reader.read(1):
                    break  # the server closed the stream (its write timeout), or it ended
                await asyncio.sleep(1)
        finally:
            writer.close()

    async def client(self, until: float, weights: dict[str, int] = WEIGHTS) -> None:
        async with httpx.AsyncClient(timeout=httpx.Timeout(300, connect=30)) as http:
            while time.monotonic() < until:
                kind = random.choices(list(weights), list(weights.values()))[0]
                try:
                    await asyncio.wait_for(self.one(http, kind), 300)
                except (TimeoutError, httpx.HTTPError, OSError, ValueError) as exc:
                    if kind in ("slow", "huge-body") and not isinstance(exc, TimeoutError):
                        continue  # the server hung up on a slow reader or an over-large upload: expected
                    self.bad(kind, f"{type(exc).__name__}: {exc}")


async def probe(base: str, until: float, out: dict[str, list[float]], run: Soak | None = None) -> None:
    """Time ``GET /v1/models`` every half second, filed under "idle", "loaded" or "loaded, huge prompt in"."""
    async with httpx.AsyncClient(timeout=60) as http:
        while time.monotonic() < until:
            huge = run is not None and run.huge_in_flight > 0
            started = time.perf_counter()
            await http.get(f"{base}/v1/models")
            phase = "idle" if run is None else "loaded, huge prompt in" if huge or run.huge_in_flight else "loaded"
            out.setdefault(phase, []).append(time.perf_counter() - started)
            await asyncio.sleep(0.5)


def _clients_forever(
    base: str, questions: list[str], clients: int, write_timeout: float, weights: dict[str, int]
) -> None:
    run = Soak(base, questions, write_timeout)

    async def clients_forever() -> None:
        await asyncio.gather(*(run.client(float("inf"), weights) for _ in range(clients)))

    asyncio.run(clients_forever())


@contextmanager
def traffic(
    base: str, questions: list[str], clients: int, write_timeout: float, weights: dict[str, int] = WEIGHTS
) -> Iterator[None]:
    """The soak's ``clients`` (none: nothing) with these ``weights`` in a process of their own until the block ends,
    so that they do not share an event loop with a bench's probes or server (``bench/prompt_stall.py``,
    ``bench/growth.py``)."""
    if not clients:
        yield
        return
    load = multiprocessing.get_context("spawn").Process(
        target=_clients_forever, args=(base, questions, clients, write_timeout, weights), daemon=True
    )
    load.start()
    try:
        yield
    finally:
        load.terminate()
        load.join()


def p99(seconds: list[float]) -> float:
    return statistics.quantiles(seconds, n=100, method="inclusive")[98] if len(seconds) > 1 else seconds[0]


def serve_command(
    port: int, engine: str, write_timeout: float, search_timeout: float, slots: int = 48
) -> tuple[list[str], list[str]]:
    """``research-serve`` on the toy model as the soak runs it (``slots`` concurrent requests); held-out questions."""
    flags, questions = toy_server(200)
    serve = [str(BIN / "research-serve"), *flags, "--port", str(port), "--engine", engine]
    serve += ["--max-concurrent-requests", str(slots), "--stream-write-timeout", str(write_timeout)]
    serve += ["--search-timeout", str(search_timeout)]
    return serve, questions


def rss_mb(pid: int) -> float:
    proc = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)]) / 2**20


async def soak(base: str, pid: int, questions: list[str], args: argparse.Namespace) -> int:
    latency: dict[str, list[float]] = {}
    await probe(base, time.monotonic() + 10, latency)
    run = Soak(base, questions, args.write_timeout)
    start = time.monotonic()
    until = start + 60 * args.minutes
    memory: list[tuple[float, float]] = []

    async def sample_memory() -> None:
        while time.monotonic() < until:
            memory.append((time.monotonic() - start, rss_mb(pid)))
            await asyncio.sleep(10)

    await asyncio.gather(
        *(run.client(until) for _ in range(args.clients)), probe(base, until, latency, run), sample_memory()
    )
    await asyncio.sleep(args.write_timeout + 2)  # the last slow readers are let go
    metrics = httpx.get(f"{base}/metrics").text
    running = next(
        float(line.split()[-1]) for line in metrics.splitlines() if line.startswith("research_requests_running")
    )
    warm = next(m for t, m in memory if t >= args.warmup) if any(t >= args.warmup for t, _ in memory) else memory[0][1]
    end = rss_mb(pid)

    print(f"\nsoak: {args.clients} clients for {args.minutes} min against research-serve (vLLM, toy model)\n")
    print(f"{'request kind':<14}{'sent':>8}{'unexpected':>12}")
    for kind in KINDS:
        print(f"{kind:<14}{run.counts[kind]:>8}{run.unexpected[kind]:>12}")
    print(f"{'total':<14}{sum(run.counts.values()):>8}{sum(run.unexpected.values()):>12}\n")
    print(f"{'probe GET /v1/models':<26}{'samples':>8}{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}{'max/idle max':>14}")
    idle_max = max(latency["idle"])
    for phase, seconds in latency.items():
        p50, tail, top = (1000 * f(seconds) for f in (statistics.median, p99, max))
        print(f"{phase:<26}{len(seconds):>8}{p50:>10.1f}{tail:>10.1f}{top:>10.1f}{max(seconds) / idle_max:>14.1f}")
    print()
    growth = 100 * (end - warm) / warm
    print(f"memory (server + engine): {warm:.0f} MB after {args.warmup:g} s, {end:.0f} MB at the end: {growth:+.1f}%")
    print("memory samples (minute: MB): " + ", ".join(f"{t / 60:.0f}: {m:.0f}" for t, m in memory[::30]))
    print(f"requests running once the clients stopped: {running:g}")
    for kind, example in run.examples.items():
        print(f"  first unexpected {kind}: {example}")
    ok = not run.unexpected and running == 0 and growth < 10
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--warmup", type=float, default=60, help="seconds before the memory baseline is taken")
    parser.add_argument("--write-timeout", type=float, default=5, help="the server's --stream-write-timeout")
    parser.add_argument("--search-timeout", type=float, default=10, help="the server's --search-timeout")
    parser.add_argument("--engine", choices=["vllm", "transformers"], default="vllm")
    args = parser.parse_args()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    serve, questions = serve_command(port, args.engine, args.write_timeout, args.search_timeout)
    log = Path(tempfile.mkdtemp(prefix="soak-")) / "research-serve.log"
    print(f"server log: {log}", flush=True)
    with launched(serve, f"{base}/health", log, timeout=900, env={"VLLM_CPU_KVCACHE_SPACE": "2"}) as proc:
        return asyncio.run(soak(base, proc.pid, questions, args))


if __name__ == "__main__":
    raise SystemExit(main())
