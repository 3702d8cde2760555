"""The batching front's search timeout measures the index's own work, not the wait for a reader."""

from __future__ import annotations

import asyncio
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
    """The real index, each read hanging until ``released`` is set (a stuck mount)."""

    def __init__(self, index: PassageIndex) -> None:
        self.index, self.released = index, threading.Event()

    def search(self, queries, **kwargs):
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
