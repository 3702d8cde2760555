"""The upstream engine resumes a stream that breaks mid-generation, without a gap or a repeated token.

A TCP proxy in front of the real ``vllm serve`` forwards its first connection's response
up to the end of its n-th server-sent event and then drops the connection, as a replica
that dies mid-stream does (later connections pass whole: a load balancer's next replica).
Greedy decoding, so the resumed generation must equal the unbroken one exactly, at every
cut, including cuts inside the three tokens of ``</search>``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import pytest

from research.engines.upstream import BROKEN, UpstreamEngine
from research.protocol import GREEDY, SEARCH_STOP, Chunk, format_result, render_prompt
from tests.support.scripted import SCRIPT_CORPUS, SCRIPT_QUESTION

STOP = [SEARCH_STOP]


class CuttingProxy:
    """Loopback TCP proxy to ``target``; its first ``cuts`` connections are dropped after ``events`` SSE events."""

    def __init__(self, target: str, *, events: int, cuts: int = 1) -> None:
        parts = urlsplit(target)
        self.host, self.port, self.path = parts.hostname, parts.port, parts.path
        self.events, self.cuts = events, cuts
        self.server: asyncio.Server | None = None
        self.connections: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}{self.path}"

    async def __aenter__(self) -> CuttingProxy:
        self.server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for task in self.connections:  # idle keep-alive connections
            task.cancel()
        await asyncio.gather(*self.connections, return_exceptions=True)

    async def _connection(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.connections.add(task)
        up_r, up_w = await asyncio.open_connection(self.host, self.port)
        cut, self.cuts = self.cuts > 0, self.cuts - 1
        upstream = asyncio.ensure_future(self._pipe(client_r, up_w))
        seen = b""
        try:
            while data := await up_r.read(65536):
                seen += data
                if cut and seen.count(b"data: ") > self.events:  # the n+1-th event has begun: end at the n-th
                    start = _nth(seen, b"data: ", self.events + 1)
                    client_w.write(data[: max(0, len(data) - (len(seen) - start))])
                    break
                client_w.write(data)
                await client_w.drain()
        finally:
            upstream.cancel()
            for writer in (client_w, up_w):
                writer.transport.abort()  # a reset, as from a replica killed mid-stream

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()


def _nth(data: bytes, needle: bytes, n: int) -> int:
    at = -1
    for _ in range(n):
        at = data.index(needle, at + 1)
    return at


async def generate(engine: UpstreamEngine, prompt: list[int], stop: list[str]) -> list[Chunk]:
    chunks = engine.generate(prompt, max_tokens=64, stop=stop, sampling=GREEDY)
    return [chunk async for chunk in chunks]


@contextlib.asynccontextmanager
async def through(url: str, tokenizer, **cutting) -> AsyncIterator[UpstreamEngine]:
    async with CuttingProxy(url, **cutting) as proxy:
        engine = UpstreamEngine(proxy.url, tokenizer, max_retries=0)
        try:
            yield engine
        finally:
            await engine.close()


async def test_a_stream_cut_at_any_event_resumes_as_if_unbroken(vllm_server, tokenizer):
    """To the search's stop string, then (after its result block) to the end of sequence."""
    prompt = tokenizer.encode(render_prompt(SCRIPT_QUESTION, "instruct", tokenizer), add_special_tokens=False)
    direct = UpstreamEngine(vllm_server, tokenizer)
    for to in ("stop string", "end of sequence"):
        whole = await generate(direct, prompt, STOP)
        ids, text = [i for c in whole for i in c.token_ids], "".join(c.text for c in whole)
        assert (
            len(whole) > 6
            and whole[-1].finish_reason == "stop"
            and whole[-1].stop_reason == (SEARCH_STOP if to == "stop string" else None)
        )
        for events in sorted({1, 2, len(whole) // 2, len(whole) - 3, len(whole) - 2, len(whole) - 1}):
            async with through(vllm_server, tokenizer, events=events) as engine:
                resumed = await generate(engine, prompt, STOP)
            assert [i for c in resumed for i in c.token_ids] == ids, f"{to}: cut after event {events}"
            assert "".join(c.text for c in resumed) == text
            assert (resumed[-1].finish_reason, resumed[-1].stop_reason) == (
                whole[-1].finish_reason,
                whole[-1].stop_reason,
            )
            assert all(c.finish_reason is None for c in resumed[:-1])
        results = format_result([p["contents"] for p in SCRIPT_CORPUS[:5]])
        prompt = prompt + ids + tokenizer.encode(results, add_special_tokens=False)
    await direct.close()


async def test_a_stream_that_keeps_breaking_fails_after_its_resumes(vllm_server, tokenizer):
    prompt = tokenizer.encode(render_prompt(SCRIPT_QUESTION, "instruct", tokenizer), add_special_tokens=False)
    async with through(vllm_server, tokenizer, events=2, cuts=99) as engine:
        got: list[Chunk] = []
        with pytest.raises(BROKEN):
            async for chunk in engine.generate(prompt, max_tokens=64, stop=STOP):
                got.append(chunk)
    assert len(got) == 2 * (engine.max_resumes + 1)  # two tokens from each attempt, none repeated
