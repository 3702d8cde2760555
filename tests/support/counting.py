"""A real index with the batch sizes of its searches recorded: how tests see the batching."""

from __future__ import annotations

from typing import Any


class CountingIndex:
    """Delegates to ``index``; ``batches`` holds the number of queries of each ``search`` call."""

    def __init__(self, index: Any) -> None:
        self.index, self.batches = index, []

    def search(self, queries: list[str], **kwargs: Any) -> Any:
        self.batches.append(len(queries))
        return self.index.search(queries, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.index, name)
