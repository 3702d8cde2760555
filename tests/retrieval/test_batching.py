"""The batching front's search timeout measures the index's own work, not the wait for a reader."""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
import time

import pytest

from research.retrieval import BatchingRetriever, PassageIndex, SearchTimeout


class SlowIndex:
    """The real index, each read first taking ``seconds`` (a slow disk or network mount)."""

    def __init__(self, index: PassageIndex, seconds: float) -> None:
        self.index, self.seconds = index, seconds

    def search(self, queries, **kwargs):
        time.sleep(self.seconds)
        return self.index.search(queries, **kwargs)


class StuckIndex:
    """The real index, each read hanging until ``released`` is set (a stuck mount); ``reading`` once one has begun."""

    def __init__(self, index: PassageIndex) -> None:
        self.index, self.released, self.reading = index, threading.Event(), threading.Event()

    def search(self, queries, **kwargs):
        self.reading.set()
        self.released.wait()
        return self.index.search(queries, **kwargs)


async def test_searches_waiting_for_a_busy_reader_are_not_timed_out(script_index):
    """One reader, four reads of ~1 s in line: the last waits ~3 s, then reads ~1 s, within its 2 s timeout."""
    retriever = BatchingRetriever(SlowIndex(script_index, 1.0), workers=1)
    try:  # different k: four reads, one after another
        results = await asyncio.gather(
            *(retriever.search(["capital of Freedonia"], k=k, timeout=2.0) for k in (1, 2, 3, 4))
        )
    finally:
        await retriever.close()
    assert [len(r.passages[0]) for r in results] == [1, 2, 3, 4]
    assert all(r.passages[0][0].id in {"fr-1", "fr-2"} for r in results)


async def test_when_every_reader_is_stuck_the_waiting_searches_time_out_too(script_index):
    index = StuckIndex(script_index)
    retriever = BatchingRetriever(index, workers=1)
    try:
        reading = asyncio.create_task(retriever.search(["capital of Freedonia"], k=1, timeout=0.3))
        waiting = asyncio.create_task(retriever.search(["capital of Freedonia"], k=2, timeout=0.3))
        for task in (reading, waiting):
            with pytest.raises(SearchTimeout, match=r"did not answer within 0\.3 s"):
                await task
    finally:
        index.released.set()
        await retriever.close()


@pytest.mark.parametrize("timeout", [None, 60.0], ids=["no-timeout", "timeout"])  # never reached
async def test_a_search_whose_caller_leaves_logs_no_error(script_index, caplog, timeout):
    """A client that leaves cancels its search, in line or on the index: nothing is logged as an error (asyncio
    used to report the search's gathered answers as "exception was never retrieved", once per dropped client)."""
    index = StuckIndex(script_index)
    retriever = BatchingRetriever(index, workers=1)
    try:
        on_the_index = asyncio.create_task(retriever.search(["capital of Freedonia"], k=1, timeout=timeout))
        in_line = asyncio.create_task(retriever.search(["capital of Freedonia"], k=2, timeout=timeout))
        # the first search's read is under way, the second waits for the reader
        assert await asyncio.to_thread(index.reading.wait, 30)
        for task in (on_the_index, in_line):
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        del on_the_index, in_line, task
        gc.collect()
        await asyncio.sleep(0.1)
    finally:
        index.released.set()
        await retriever.close()
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
