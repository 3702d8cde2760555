"""Dynamic batching of searches from many concurrent loops.

Each search loop asks for one query at a time. :class:`BatchingRetriever` queues
those requests and a dispatcher drains the queue: everything that arrived while
the index was busy goes out as the next batch, in one embedding call, on a worker
thread. Up to ``workers`` batches run at once, so one slow read (a stuck network
mount) does not hold up every search; when all are busy, batches grow by
themselves; at low load a query waits for nobody.

A search's ``timeout`` measures the index's own work (embedding + query), from the
moment its batch goes to the index: time spent waiting in line is load, not a stalled
index, unless every reader has been stuck on one read for longer than ``timeout``. What
bounds the line is the server's admission (:attr:`BatchingRetriever.waiting`).
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from research.protocol import Retrieved
from research.retrieval.index import PassageIndex, check_search
from research.wire import Passage, SearchMode

if TYPE_CHECKING:
    from research.retrieval.remote import RemoteIndex
    from research.retrieval.web import WebSearch


class SearchTimeout(Exception):
    """The passage index did not answer a search in time."""


class FetchUnsupported(Exception):
    """The retriever cannot look passages up by id (a running retriever's APIs search only)."""


def _read_out(answers: asyncio.Future[Any]) -> None:
    """Mark the outcome of a search's gathered answers as seen: once its caller is cancelled or times out, the
    gather holds a CancelledError nobody awaits, which asyncio would log as an error of its own."""
    if not answers.cancelled():
        answers.exception()


@dataclass(slots=True)
class _Queued:
    query: str
    k: int
    mode: SearchMode
    future: asyncio.Future[tuple[list[Passage], float]]
    started: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when its batch goes to the index."""


class BatchingRetriever:
    """Async retriever over a :class:`PassageIndex` (or a running retriever, :class:`RemoteIndex`, or the web,
    :class:`WebSearch`) that merges concurrent searches."""

    def __init__(
        self, index: PassageIndex | RemoteIndex | WebSearch, *, max_batch: int = 256, workers: int = 4
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self.index = index
        self.max_batch = max_batch
        self.workers = workers
        self.waiting = 0
        """Searches queued and not yet sent to the index (what admission control reads)."""
        self._queue: asyncio.Queue[_Queued] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._batches: set[asyncio.Task[None]] = set()
        self._reads: dict[object, float] = {}
        """When each index read under way started (``perf_counter``)."""

    async def search(
        self, queries: Sequence[str], *, k: int, mode: SearchMode = "vector", timeout: float | None = None
    ) -> Retrieved:
        """Top-``k`` passages per query, and the seconds the index (embedding + query) spent on the batches
        that served them; concurrent callers share embedding calls.

        ``timeout``: seconds the index may take once these queries' batch reaches it
        (:class:`SearchTimeout` after that); the wait for a free index reader is not counted.
        """
        check_search(k, mode)  # here, so that one bad request does not fail the batch it would join
        if self._worker is None or self._worker.done():
            self._queue = asyncio.Queue()
            self._worker = asyncio.create_task(self._run(), name="batching-retriever")
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        requests = [_Queued(q, k, mode, loop.create_future()) for q in queries]
        for request in requests:
            self._queue.put_nowait(request)
        self.waiting += len(requests)
        results = await self._results(requests, timeout)
        return Retrieved([passages for passages, _ in results], max(seconds for _, seconds in results))

    def _stalled(self, timeout: float) -> bool:
        """Every reader has been on its read for more than ``timeout`` seconds."""
        now = time.perf_counter()
        return len(self._reads) >= self.workers and all(now - t > timeout for t in self._reads.values())

    async def _results(self, requests: list[_Queued], timeout: float | None) -> list[tuple[list[Passage], float]]:
        answers = asyncio.gather(*(r.future for r in requests))
        answers.add_done_callback(_read_out)
        if timeout is None:
            return await answers
        try:
            for r in requests:
                while not r.started.is_set():  # in line: load, unless the readers are all stuck
                    try:  # asyncio.timeout, not wait_for: 3.11's wait_for loses a cancel that meets the event
                        async with asyncio.timeout(timeout):
                            await r.started.wait()
                    except TimeoutError:
                        if self._stalled(timeout):
                            raise
            async with asyncio.timeout(timeout):
                return await answers
        except TimeoutError as exc:
            raise SearchTimeout(f"the passage index did not answer within {timeout:g} s") from exc
        finally:
            answers.cancel()  # no-op once done; else its requests are dropped from their batch

    async def _run(self) -> None:
        assert self._queue is not None
        slots = asyncio.Semaphore(self.workers)
        while True:
            batch = [await self._queue.get()]
            await slots.acquire()  # while every worker is busy, the queue grows into the next batch
            while len(batch) < self.max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            task = asyncio.create_task(self._serve(batch))
            self._batches.add(task)
            task.add_done_callback(self._batches.discard)
            task.add_done_callback(lambda _: slots.release())

    async def _serve(self, batch: list[_Queued]) -> None:
        groups: defaultdict[tuple[int, SearchMode], list[_Queued]] = defaultdict(list)
        self.waiting -= len(batch)
        for request in batch:
            if not request.future.done():  # its caller may have been cancelled
                groups[request.k, request.mode].append(request)
        for (k, mode), group in groups.items():
            for request in group:
                request.started.set()
            started = time.perf_counter()
            read = object()
            self._reads[read] = started
            try:
                results = await asyncio.to_thread(self.index.search, [r.query for r in group], k=k, mode=mode)
            except Exception as exc:
                for r in group:
                    if not r.future.done():
                        r.future.set_exception(exc)
                continue
            finally:
                del self._reads[read]
            seconds = time.perf_counter() - started
            for r, passages in zip(group, results, strict=True):
                if not r.future.done():
                    r.future.set_result((passages, seconds))

    async def fetch(self, ids: Sequence[str], *, timeout: float | None = None) -> dict[str, Passage]:
        """The passages with these ids (an unknown id is left out), from a LanceDB index, within ``timeout`` s."""
        if not isinstance(self.index, PassageIndex):
            raise FetchUnsupported(f"the {self.index!r} cannot look passages up by id; only a LanceDB index can")
        try:
            return await asyncio.wait_for(asyncio.to_thread(self.index.fetch, list(ids)), timeout)
        except TimeoutError as exc:
            raise SearchTimeout(f"the passage index did not answer within {timeout:g} s") from exc

    def using(self, mode: SearchMode = "vector", *, timeout: float | None = None) -> ModeRetriever:
        """This retriever with ``mode`` and the search ``timeout`` fixed: the shape the search loop calls."""
        return ModeRetriever(self, mode, timeout)

    async def close(self) -> None:
        """Stop dispatching; reads already on a thread finish there, their callers get nothing."""
        if self._worker is not None:
            self._worker.cancel()
            self._worker = None
        for task in list(self._batches):
            task.cancel()


@dataclass(frozen=True, slots=True)
class ModeRetriever:
    """A :class:`BatchingRetriever` searching in one mode, each search failing with :class:`SearchTimeout` once the
    index has worked on it for ``timeout`` seconds (the wait for a free reader is not counted; None: no limit).
    See :meth:`BatchingRetriever.using`."""

    retriever: BatchingRetriever
    mode: SearchMode
    timeout: float | None = None

    async def search(self, queries: Sequence[str], *, k: int) -> Retrieved:
        return await self.retriever.search(queries, k=k, mode=self.mode, timeout=self.timeout)
