"""Dynamic batching of searches from many concurrent loops.

Each search loop asks for one query at a time. :class:`BatchingRetriever` queues
those requests and a dispatcher drains the queue: everything that arrived while
the index was busy goes out as the next batch, in one embedding call, on a worker
thread. Up to ``workers`` batches run at once, so one slow read (a stuck network
mount) does not hold up every search; when all are busy, batches grow by
themselves; at low load a query waits for nobody.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from research.retrieval.index import PassageIndex, SearchMode, check_search
from research.retrieval.passage import Passage


class SearchResults(list[list[Passage]]):
    """Passages per query, and the seconds the index (embedding + query) spent on the batches
    that served them: the search loop tells a search's queueing from its index time with it."""

    def __init__(self, results: list[list[Passage]], index_seconds: float) -> None:
        super().__init__(results)
        self.index_seconds = index_seconds


@dataclass(slots=True)
class _Request:
    query: str
    k: int
    mode: SearchMode
    future: asyncio.Future[tuple[list[Passage], float]]


class BatchingRetriever:
    """Async retriever over a :class:`PassageIndex` that merges concurrent searches."""

    def __init__(self, index: PassageIndex, *, max_batch: int = 256, workers: int = 4) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self.index = index
        self.max_batch = max_batch
        self.workers = workers
        self._queue: asyncio.Queue[_Request] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._batches: set[asyncio.Task[None]] = set()

    async def search(self, queries: Sequence[str], *, k: int, mode: SearchMode = "vector") -> SearchResults:
        """Top-``k`` passages per query; concurrent callers share embedding calls."""
        check_search(k, mode)  # here, so that one bad request does not fail the batch it would join
        if self._worker is None or self._worker.done():
            self._queue = asyncio.Queue()
            self._worker = asyncio.create_task(self._run(), name="batching-retriever")
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        requests = [_Request(q, k, mode, loop.create_future()) for q in queries]
        for request in requests:
            self._queue.put_nowait(request)
        results = await asyncio.gather(*(r.future for r in requests))
        return SearchResults([passages for passages, _ in results], max(seconds for _, seconds in results))

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

    async def _serve(self, batch: list[_Request]) -> None:
        groups: defaultdict[tuple[int, SearchMode], list[_Request]] = defaultdict(list)
        for request in batch:
            if not request.future.done():  # its caller may have been cancelled
                groups[request.k, request.mode].append(request)
        for (k, mode), group in groups.items():
            started = time.perf_counter()
            try:
                results = await asyncio.to_thread(self.index.search, [r.query for r in group], k=k, mode=mode)
            except Exception as exc:
                for r in group:
                    if not r.future.done():
                        r.future.set_exception(exc)
                continue
            seconds = time.perf_counter() - started
            for r, passages in zip(group, results, strict=True):
                if not r.future.done():
                    r.future.set_result((passages, seconds))

    def using(self, mode: SearchMode) -> ModeRetriever:
        """This retriever with ``mode`` fixed: the shape the search loop calls."""
        return ModeRetriever(self, mode)

    async def close(self) -> None:
        """Stop dispatching; reads already on a thread finish there, their callers get nothing."""
        if self._worker is not None:
            self._worker.cancel()
            self._worker = None
        for task in list(self._batches):
            task.cancel()


@dataclass(frozen=True, slots=True)
class ModeRetriever:
    """A :class:`BatchingRetriever` searching in one mode (see :meth:`BatchingRetriever.using`)."""

    retriever: BatchingRetriever
    mode: SearchMode

    async def search(self, queries: Sequence[str], *, k: int) -> list[list[Passage]]:
        return await self.retriever.search(queries, k=k, mode=self.mode)
