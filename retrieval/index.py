"""The LanceDB passage index: open it, search it.

Shaped like LanceDB itself: :func:`connect` takes the URI (a local path by default,
any LanceDB URI such as ``s3://bucket/wiki18`` or ``db://project`` for scale-out)
and returns a :class:`PassageIndex` whose :meth:`~PassageIndex.search` is batched:
many queries, one embedding call, one vector query. :mod:`~research.retrieval.build`
writes it; opening it with another embedder than the one that built it is an
:class:`IndexMismatchError`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import lancedb

from research.retrieval.ann import ann_nprobes, nearest
from research.retrieval.embedders import Embedder
from research.wire import DEFAULT_K, MAX_K, SEARCH_MODES, Passage, SearchMode

TABLE = "passages"
META = {
    "embedder": b"research.embedder",
    "query_prefix": b"research.query_prefix",
    "passage_prefix": b"research.passage_prefix",
    "dim": b"research.dim",
}


class IndexMismatchError(ValueError):
    """The index was built with another embedder than the one asked for."""


def check_search(k: int, mode: str) -> None:
    """Refuse a ``k`` outside 1..MAX_K or an unknown mode (every search path checks here)."""
    if not 1 <= k <= MAX_K:
        raise ValueError(f"k must be between 1 and {MAX_K}, got {k}")
    if mode not in SEARCH_MODES:
        raise ValueError(f"unknown search mode {mode!r}; choose one of {', '.join(SEARCH_MODES)}")


def built_with(uri: str | Path, table: str = TABLE) -> str | None:
    """The embedder an existing index at ``uri`` was built with (None: no index there yet); loads no model."""
    db = lancedb.connect(str(uri))
    if table not in db.table_names():
        return None
    return (db.open_table(table).schema.metadata or {}).get(META["embedder"], b"").decode() or None


def check_embedder(tbl: Any, embedder: Embedder, uri: str | Path) -> None:
    built_with = (tbl.schema.metadata or {}).get(META["embedder"], b"").decode()
    if built_with and embedder.spec.name != built_with:
        raise IndexMismatchError(
            f"the index at {uri} was built with {built_with!r}; searching it with {embedder.spec.name!r} "
            "would compare vectors from different models. Pass embedder=None to use the index's own."
        )


class PassageIndex:
    """An open passage table, the embedder its vectors came from, and how many IVF partitions a query probes."""

    def __init__(self, uri: str | Path, table: Any, embedder: Embedder, nprobes: int | None = None) -> None:
        self.uri = str(uri)
        self.table = table
        self.embedder = embedder
        if nprobes is not None and nprobes < 1:
            raise ValueError(f"nprobes must be at least 1, got {nprobes}")
        self.nprobes = nprobes or ann_nprobes(table.count_rows())

    def __len__(self) -> int:
        return self.table.count_rows()

    def warm_up(self) -> None:
        """Load the embedder and run one query now, so that no real search pays for it (on two cores
        the first one took over 10 s: a server that answered /health before it timed out its first search)."""
        if len(self):
            self.search(["warm-up"], k=1)  # embeds the query too
        else:
            self.embedder.encode_queries(["warm-up"])

    def search(self, queries: Sequence[str], *, k: int = DEFAULT_K, mode: SearchMode = "vector") -> list[list[Passage]]:
        """Top-``k`` passages for each query, best first.

        ``vector`` (as ReSearch was trained): cosine similarity of the embeddings, all
        queries in one embedding call and one vector query. ``fts``: BM25 over the
        passage text. ``hybrid``: both lists fused by reciprocal rank (RRF, k=60).
        """
        check_search(k, mode)
        if not queries:
            return []
        if mode == "vector":
            return self._vector(queries, k)
        if mode == "fts":
            return [self._fts(q, k) for q in queries]
        depth = max(2 * k, 20)
        return [
            _rrf([dense, self._fts(q, depth)], k)
            for q, dense in zip(queries, self._vector(queries, depth), strict=True)
        ]

    def fetch(self, ids: Sequence[str]) -> dict[str, Passage]:
        """The passages with these ids (an id not in the index is left out): one filtered scan, or a lookup in
        the id column's BTREE index where :func:`~research.retrieval.build.build_index` made one."""
        if not ids:
            return {}
        quoted = ", ".join("'" + i.replace("'", "''") + "'" for i in ids)  # SQL string literals
        rows = self.table.search().where(f"id IN ({quoted})").select(["id", "contents"]).limit(len(ids)).to_list()
        return {r["id"]: Passage(r["id"], r["contents"]) for r in rows}

    def _vector(self, queries: Sequence[str], k: int) -> list[list[Passage]]:
        vectors = self.embedder.encode_queries(list(queries))
        return [
            [Passage(r["id"], r["contents"], 1.0 - r["_distance"]) for r in rows]
            for rows in nearest(self.table, vectors, k, ["id", "contents"], nprobes=self.nprobes)
        ]

    def _fts(self, query: str, k: int) -> list[Passage]:
        if not query.strip():
            return []
        try:
            rows = self.table.search(query, query_type="fts").limit(k).select(["id", "contents"]).to_list()
        except ValueError as exc:
            raise ValueError(
                f"full-text search failed on {self.uri} ({exc}); rebuild with research-index build"
            ) from exc
        return [Passage(r["id"], r["contents"], r["_score"]) for r in rows]


def _rrf(rankings: list[list[Passage]], k: int, c: int = 60) -> list[Passage]:
    """Reciprocal-rank fusion: score = sum over lists of 1 / (c + rank)."""
    scores: dict[str, float] = {}
    first: dict[str, Passage] = {}
    for ranking in rankings:
        for rank, p in enumerate(ranking, 1):
            scores[p.id] = scores.get(p.id, 0.0) + 1.0 / (c + rank)
            first.setdefault(p.id, p)
    best = sorted(scores, key=scores.__getitem__, reverse=True)[:k]
    return [replace(first[i], score=scores[i]) for i in best]


def connect(
    uri: str | Path, *, embedder: str | Embedder | None = None, table: str = TABLE, nprobes: int | None = None
) -> PassageIndex:
    """Open the passage index at ``uri``; ``embedder`` defaults to the one that built it.

    ``nprobes``: IVF partitions each vector query searches (default :func:`ann_nprobes`
    of the row count); more is slower and finds more of the true nearest passages.
    """
    try:
        tbl = lancedb.connect(str(uri)).open_table(table)
    except (FileNotFoundError, ValueError) as exc:
        raise FileNotFoundError(f"no passage index at {uri} (table {table!r}): build one with research-index") from exc
    meta = tbl.schema.metadata or {}
    built_with = meta.get(META["embedder"], b"").decode()
    if embedder is None:
        embedder = Embedder(built_with)
    elif isinstance(embedder, str):
        embedder = Embedder(embedder)
    check_embedder(tbl, embedder, uri)
    return PassageIndex(uri, tbl, embedder, nprobes)
