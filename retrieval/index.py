"""The LanceDB passage index: build it from passages, open it, search it.

Shaped like LanceDB itself: :func:`connect` takes the URI (a local path by default,
any LanceDB URI such as ``s3://bucket/wiki18`` or ``db://project`` for scale-out)
and returns a :class:`PassageIndex` whose :meth:`~PassageIndex.search` is batched:
many queries, one embedding call, one vector query.

The table records the embedder that built it (name, prefixes, dimension) in its
schema metadata; opening it with another embedder is an :class:`IndexMismatchError`.
"""

from __future__ import annotations

import csv
import gzip
import json
import logging
import math
import threading
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace
from itertools import chain, islice
from pathlib import Path
from typing import Any, Protocol

import lancedb
import numpy as np
import pyarrow as pa
from lancedb.index import FTS, IvfFlat
from tqdm import tqdm

from research.retrieval.embedders import Embedder
from research.retrieval.pipeline import embed_chunks
from research.wire import MAX_K, SEARCH_MODES, Passage, SearchMode

TABLE = "passages"
log = logging.getLogger("research.retrieval")

_META = {
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


def _open(path: str | Path, *, text: bool = True, **kwargs: Any) -> Any:
    """A corpus file opened for reading (UTF-8 text or bytes); ``.gz`` files are decompressed as they are read."""
    opener = gzip.open if Path(path).suffix == ".gz" else open
    return opener(path, "rt", encoding="utf-8", **kwargs) if text else opener(path, "rb")


def _format(path: str | Path) -> str:
    """The corpus format's suffix, looking through ``.gz``."""
    suffixes = Path(path).suffixes
    return suffixes[-2] if suffixes[-1:] == [".gz"] and len(suffixes) > 1 else Path(path).suffix


def read_jsonl(path: str | Path) -> Iterator[Passage]:
    """Passages of a wiki-18 jsonl file (one ``{"id", "contents"}`` object a line)."""
    with _open(path) as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}:{n}: not JSON ({exc.msg})") from None
                if not isinstance(row, dict) or not isinstance(row.get("id"), str | int):
                    raise ValueError(f"{path}:{n}: not a wiki-18 passage (an object with a string or integer 'id')")
                if not isinstance(row.get("contents"), str):
                    got = json.dumps(row.get("contents"))[:40]
                    raise ValueError(f"{path}:{n}: 'contents' must be a string, got {got}")
                yield Passage(str(row["id"]), row["contents"])


def read_tsv(path: str | Path) -> Iterator[Passage]:
    """Passages of DPR's ``psgs_w100.tsv`` (``id  text  title`` with a header row)."""
    with _open(path, newline="") as f:
        rows = csv.reader(f, delimiter="\t")
        header = next(rows, None)
        if header is None or [h.strip() for h in header[:3]] != ["id", "text", "title"]:
            raise ValueError(f"{path}: expected DPR's header 'id<TAB>text<TAB>title', got {header}")
        for n, row in enumerate(rows, 2):
            if len(row) < 3:
                raise ValueError(f"{path}:{n}: expected 3 tab-separated columns, got {len(row)}")
            yield Passage(row[0], f'"{row[2]}"\n{row[1]}')


def read_corpus(path: str | Path) -> Iterator[Passage]:
    """Stream a corpus file: wiki-18 ``.jsonl`` or DPR ``.tsv`` (either gzipped or not), chosen by its suffix."""
    suffix = _format(path)
    if suffix in {".jsonl", ".json"}:
        return read_jsonl(path)
    if suffix == ".tsv":
        return read_tsv(path)
    raise ValueError(f"{path}: unknown corpus format {suffix!r}; use wiki-18 .jsonl or DPR .tsv (or .gz of either)")


def count_lines(path: str | Path) -> int:
    """Rows in a corpus file (for the progress bar), counted in large binary blocks."""
    with _open(path, text=False) as f:
        lines = sum(block.count(b"\n") for block in iter(lambda: f.read(1 << 24), b""))
    return lines - (1 if _format(path) == ".tsv" else 0)


def _batches(items: Iterable[Passage], size: int) -> Iterator[list[Passage]]:
    it = iter(items)
    while batch := list(islice(it, size)):
        yield batch


def _schema(embedder: Embedder, dim: int) -> pa.Schema:
    spec = embedder.spec
    metadata = {
        _META["embedder"]: spec.name.encode(),
        _META["query_prefix"]: spec.query_prefix.encode(),
        _META["passage_prefix"]: spec.passage_prefix.encode(),
        _META["dim"]: str(dim).encode(),
    }
    fields = [
        pa.field("id", pa.string()),
        pa.field("contents", pa.string()),
        pa.field("vector", pa.list_(pa.float32(), dim)),
    ]
    return pa.schema(fields, metadata=metadata)


class VectorSource(Protocol):
    """Where a build's vectors come from: an embedder (:class:`Embedded`) or vectors computed before."""

    label: str
    """What the progress bar says it is doing."""
    dim: int

    def stream(self, start: int, batches: Iterable[list[Passage]]) -> Iterator[tuple[list[Passage], np.ndarray]]:
        """Each batch with its vectors, in order; the first batch starts at the corpus's passage ``start``."""
        ...


@dataclass(frozen=True, slots=True)
class Embedded:
    """Vectors computed by ``embedder`` as the build goes (:func:`~research.retrieval.pipeline.embed_chunks`)."""

    embedder: Embedder
    label: str = "embedding"

    @property
    def dim(self) -> int:
        return self.embedder.dim

    def stream(self, start: int, batches: Iterable[list[Passage]]) -> Iterator[tuple[list[Passage], np.ndarray]]:
        return embed_chunks(self.embedder, ((batch, [p.contents for p in batch]) for batch in batches))


ANN_MIN_ROWS = 100_000
"""Below this many rows exact search is fast enough and an ANN index is not built."""


KMEANS_SAMPLE_RATE = 64
"""Rows per IVF partition the k-means trains on (FAISS asks for at least 39)."""


def ann_partitions(rows: int) -> int:
    """IVF partitions for a table of ``rows`` rows: sqrt(rows), LanceDB's own rule (1,000 at 1M)."""
    return max(1, round(math.sqrt(rows)))


def ann_index(rows: int) -> IvfFlat:
    """The vector index for a table of ``rows`` rows: IVF with full float32 vectors in each partition.

    A query scores its ``nprobes`` nearest partitions exactly, so recall depends only on
    how many are probed. On 1M vectors it beat IVF-HNSW-SQ on speed at equal recall and
    built 4-6x faster, and IVF-PQ on recall (``bench/ann_recall.py``, README "Speed").
    Its k-means trains on 64 rows a partition (LanceDB's default is 256): on 1M vectors
    the build took 0.82x the time at the same recall (``bench/ivf_build.py``).
    """
    return IvfFlat(distance_type="dot", num_partitions=ann_partitions(rows), sample_rate=KMEANS_SAMPLE_RATE)


def ann_nprobes(rows: int) -> int:
    """Partitions a query probes: 1% of them, at least 10 (recall@10 >= 0.99 on 1M clustered vectors)."""
    return max(10, ann_partitions(rows) // 100)


def nearest(
    table: Any, vectors: Sequence[Any], k: int, columns: list[str], *, nprobes: int | None = None
) -> list[list[dict[str, Any]]]:
    """The ``k`` rows nearest (by dot product) to each vector, ``columns`` and ``_distance`` of each.

    One LanceDB query for the whole batch; ``nprobes`` IVF partitions are searched
    (LanceDB's default when None; ignored by a table without a vector index).
    """
    query = table.search(list(vectors) if len(vectors) > 1 else vectors[0]).distance_type("dot").limit(k)
    query = query.nprobes(nprobes) if nprobes is not None else query
    out: list[list[dict[str, Any]]] = [[] for _ in vectors]
    for row in query.select([*columns, "_distance"]).to_arrow().to_pylist():
        out[row.pop("query_index", 0)].append(row)
    return out


def _unique(batch: list[Passage], seen: set[str]) -> list[Passage]:
    """``batch``, once its ids are checked against every id before it (``seen``, which it joins)."""
    for p in batch:
        if p.id in seen:
            raise ValueError(f"the passage id {p.id!r} appears twice in the corpus: ids must be unique")
        seen.add(p.id)
    return batch


def _committed_prefix(tbl: Any, passages: Iterator[Passage], rows: int, uri: str | Path) -> set[str]:
    """Skip the ``rows`` passages a previous run committed, checking the table holds those very passages; their ids.

    The last committed row must be this corpus's passage ``rows`` in id and text: wiki-18's
    ids are positions, so another corpus would match on the id alone.
    """
    last, seen = None, set()
    for last in islice(passages, rows):
        seen.add(last.id)
    stored = tbl.search().select(["id", "contents"]).offset(rows - 1).limit(1).to_list()
    if last is None or not stored or (stored[0]["id"], stored[0]["contents"]) != (last.id, last.contents):
        raise ValueError(
            f"the index at {uri} holds {rows} rows that are not the first {rows} passages of this corpus; "
            "rebuild it with overwrite=True (research-index build --overwrite)"
        )
    return seen


def build_index(
    uri: str | Path,
    passages: Iterable[Passage],
    *,
    embedder: Embedder,
    batch_size: int = 1024,
    table: str = TABLE,
    total: int | None = None,
    overwrite: bool = False,
    vectors: VectorSource | None = None,
) -> PassageIndex:
    """Embed ``passages`` into table ``table`` at ``uri``, then index it for search.

    ``vectors`` gives the vectors instead of embedding the passages (``research-index
    import``); the index still records ``embedder`` as the model its vectors came from.

    Streaming and resumable: passages are read lazily and appended in corpus order,
    one atomic LanceDB commit per batch, so a killed build leaves exactly the first
    N passages. Run it again with the same corpus and it checks those N and goes on
    from N + 1: no passage missing, none twice. A finished index is left as it is.
    Passage ids must be unique: a repeated one stops the build at its batch (every id is
    kept in a set: about 1.5 GB for wiki-18's 21M).
    Then a full-text (BM25) index is built, and from :data:`ANN_MIN_ROWS` rows on
    an ANN vector index (:func:`ann_index`).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    vectors = vectors or Embedded(embedder)
    schema = _schema(embedder, vectors.dim)
    db = lancedb.connect(str(uri))
    passages = iter(passages)
    done, seen = 0, set()
    resuming = not overwrite and table in db.table_names()
    if resuming:
        tbl = db.open_table(table)
        _check_embedder(tbl, embedder, uri)
        done = tbl.count_rows()
        if done:
            seen = _committed_prefix(tbl, passages, done, uri)
    batches = (_unique(batch, seen) for batch in _batches(passages, batch_size))
    first = next(batches, None)  # read before an existing table is replaced: a bad or empty corpus changes nothing
    if first is None and not done:
        raise ValueError("the corpus holds no passages")
    if not resuming:
        tbl = db.create_table(table, schema=schema, mode="overwrite")

    def commit(rows: pa.Table) -> int:
        tbl.add(rows)
        return rows.num_rows

    # One commit in flight while the next batch is embedded; a failure waits for it: the prefix stays whole.
    with (
        ThreadPoolExecutor(1, thread_name_prefix="index-writer") as writer,
        tqdm(total=total, initial=done, unit="passage", desc=vectors.label, dynamic_ncols=True, smoothing=0.05) as bar,
    ):
        writing: Future | None = None
        for batch, block in vectors.stream(done, chain([first], batches) if first else ()):
            rows = pa.table(
                {
                    "id": [p.id for p in batch],
                    "contents": [p.contents for p in batch],
                    "vector": pa.FixedSizeListArray.from_arrays(pa.array(block.ravel()), vectors.dim),
                },
                schema=schema,
            )
            if writing is not None:
                bar.update(writing.result())
            writing = writer.submit(commit, rows)
        if writing is not None:
            bar.update(writing.result())
    _ensure_indices(tbl)
    return PassageIndex(uri, tbl, embedder)


def _ensure_indices(tbl: Any) -> None:
    """Build the full-text index and (for large tables) the ANN index, unless current.

    An index of another kind (an IVF-HNSW-SQ from an earlier version) is rebuilt. The two
    are built side by side: LanceDB builds each mostly on one core (on 500k rows, two
    cores: 35.0 s together against 44.3 s one after the other).
    """
    indexed = {cfg.columns[0]: cfg for cfg in tbl.list_indices()}
    rows = tbl.count_rows()
    wanted = [("contents", FTS()), ("vector", ann_index(rows) if rows >= ANN_MIN_ROWS else None)]
    todo = [
        (column, config)
        for column, config in wanted
        if config is not None
        and not (
            column in indexed
            and indexed[column].index_type == type(config).__name__  # LanceDB names it after the config class
            and tbl.index_stats(indexed[column].name).num_unindexed_rows == 0
        )
    ]
    if not todo:
        return
    names = " and ".join(f"{type(config).__name__} on {column!r}" for column, config in todo)
    log.info("building the %s index%s (%d rows)", names, "es" if len(todo) > 1 else "", rows)
    with _elapsed(f"indexing ({names})"), ThreadPoolExecutor(len(todo), thread_name_prefix="index") as pool:
        for built in [pool.submit(tbl.create_index, column, config=config, replace=True) for column, config in todo]:
            built.result()


@contextmanager
def _elapsed(stage: str) -> Iterator[None]:
    """A progress line for a stage LanceDB reports no progress of: its elapsed time, redrawn every second."""
    done = threading.Event()
    with tqdm(desc=stage, bar_format="{desc}: {elapsed} elapsed", dynamic_ncols=True) as bar:

        def tick() -> None:
            while not done.wait(1):
                bar.refresh()

        ticker = threading.Thread(target=tick, daemon=True)
        ticker.start()
        try:
            yield
        finally:
            done.set()
            ticker.join()


def built_with(uri: str | Path, table: str = TABLE) -> str | None:
    """The embedder an existing index at ``uri`` was built with (None: no index there yet); loads no model."""
    db = lancedb.connect(str(uri))
    if table not in db.table_names():
        return None
    return (db.open_table(table).schema.metadata or {}).get(_META["embedder"], b"").decode() or None


def _check_embedder(tbl: Any, embedder: Embedder, uri: str | Path) -> None:
    built_with = (tbl.schema.metadata or {}).get(_META["embedder"], b"").decode()
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

    def search(self, queries: Sequence[str], *, k: int = 5, mode: SearchMode = "vector") -> list[list[Passage]]:
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
    built_with = meta.get(_META["embedder"], b"").decode()
    if embedder is None:
        embedder = Embedder(built_with)
    elif isinstance(embedder, str):
        embedder = Embedder(embedder)
    _check_embedder(tbl, embedder, uri)
    return PassageIndex(uri, tbl, embedder, nprobes)
