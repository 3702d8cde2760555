"""Build the passage index: stream a corpus through an embedder into LanceDB, resumably, then index it.

The table records the embedder that built it (name, prefixes, dimension) in its schema
metadata (:data:`~research.retrieval.index.META`), so a search never mixes models.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import chain, islice
from pathlib import Path
from typing import Any, Protocol

import lancedb
import numpy as np
import pyarrow as pa
from lancedb.index import FTS, BTree
from tqdm import tqdm

from research.retrieval.ann import ANN_MIN_ROWS, ann_index, build_ann_index
from research.retrieval.embedders import Embedder
from research.retrieval.index import META, TABLE, PassageIndex, check_embedder
from research.retrieval.ledger import LOG_TABLE, Digest, IdHashes, id_hashes
from research.retrieval.pipeline import embed_chunks
from research.wire import Passage

log = logging.getLogger("research.retrieval")


def _batches(items: Iterable[Passage], size: int) -> Iterator[list[Passage]]:
    it = iter(items)
    while batch := list(islice(it, size)):
        yield batch


def _schema(embedder: Embedder, dim: int) -> pa.Schema:
    spec = embedder.spec
    metadata = {
        META["embedder"]: spec.name.encode(),
        META["query_prefix"]: spec.query_prefix.encode(),
        META["passage_prefix"]: spec.passage_prefix.encode(),
        META["dim"]: str(dim).encode(),
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


_LOG_SCHEMA = pa.schema([pa.field("rows", pa.int64()), pa.field("digest", pa.string())])


class Ledger:
    """What the build has read and committed: the ids' hashes, the batches read but not yet committed, the digest.

    The reading side calls :meth:`check` on each batch before it is embedded; the writer thread
    calls :meth:`committed` after each commit (batches commit in the order they are read).
    """

    def __init__(self, db: Any, resuming: bool) -> None:
        self.db, self.tbl = db, None
        self.digest, self.hashes = Digest(), IdHashes()
        self._pending: deque[set[str]] = deque()
        self.log = db.open_table(LOG_TABLE) if resuming and LOG_TABLE in db.table_names() else None

    def check(self, batch: list[Passage]) -> list[Passage]:
        """``batch``, once no id in it is one seen before (a repeat stops the build before the batch is written)."""
        ids = {p.id for p in batch}
        for i in self.hashes.add(id_hashes(p.id for p in batch)):
            p = batch[i]
            if any(q.id == p.id for q in batch[:i]) or self._read_before(p.id):
                raise ValueError(f"the passage id {p.id!r} appears twice in the corpus: ids must be unique")
        self._pending.append(ids)
        return batch

    def _read_before(self, passage_id: str) -> bool:
        """Whether an earlier batch has this id (its hash matched one: the id itself decides)."""
        if any(passage_id in ids for ids in list(self._pending)):
            return True
        quoted = passage_id.replace("'", "''")
        return self.tbl is not None and bool(self.tbl.search().where(f"id = '{quoted}'").limit(1).to_list())

    def committed(self, batch: list[Passage], rows: int) -> None:
        """``batch`` was committed, the table now holding ``rows`` passages: record the digest."""
        self.digest.update(batch)
        self.record(rows)
        self._pending.popleft()

    def record(self, rows: int) -> None:
        if self.log is None:
            self.log = self.db.create_table(LOG_TABLE, schema=_LOG_SCHEMA, mode="overwrite")
        self.log.add(pa.table({"rows": [rows], "digest": [self.digest.hexdigest()]}, schema=_LOG_SCHEMA))

    def skip_committed(self, passages: Iterator[Passage], rows: int, uri: str | Path) -> None:
        """Read past the ``rows`` passages a previous run committed, checking they are this corpus's first ``rows``:
        the digest at every point the log recorded, then the rows after the last one (a kill between a commit and its
        record) passage by passage. An index from before the log has its last row compared only."""
        assert self.tbl is not None
        recorded = dict(zip(*self.log.to_arrow().select(["rows", "digest"]).to_pydict().values(), strict=True)) \
            if self.log is not None else {}  # fmt: skip
        checked, since, ids, n = 0, [], [], 0
        for n, p in enumerate(islice(passages, rows), 1):
            self.digest.update((p,))
            ids.append(p.id)
            if recorded:
                since.append(p)
            else:
                since = [p]
            if len(ids) == 65536:
                self.hashes.add(id_hashes(ids))
                ids.clear()
            if n in recorded:
                if recorded[n] != self.digest.hexdigest():
                    raise _not_this_corpus(uri, rows, f"passages {checked + 1}-{n} differ")
                checked, since = n, []
        self.hashes.add(id_hashes(ids))
        if n < rows:
            raise _not_this_corpus(uri, rows, f"the corpus holds {n} passages")
        if not recorded:
            log.warning("the index at %s was built before content digests: only its last row is compared", uri)
        if since:
            rows_after = self.tbl.search().select(["id", "contents"]).offset(rows - len(since)).limit(len(since))
            if [(r["id"], r["contents"]) for r in rows_after.to_list()] != [(p.id, p.contents) for p in since]:
                raise _not_this_corpus(uri, rows, f"passages {rows - len(since) + 1}-{rows} differ")
        if rows not in recorded:
            self.record(rows)


def _not_this_corpus(uri: str | Path, rows: int, why: str) -> ValueError:
    return ValueError(f"the index at {uri} holds {rows} rows that are not the first {rows} passages of this corpus "
                      f"({why}); rebuild it with overwrite=True (research-index build --overwrite)")  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class IndexBuild:
    """How :func:`build_index` builds an index: its options, each keyword-only."""

    embedder: Embedder
    """The model that embeds the passages, recorded in the table (imported vectors must come from it)."""
    batch_size: int = 1024
    """Passages per embedding batch and per LanceDB commit."""
    table: str = TABLE
    total: int | None = None
    """Passages in the corpus, when known: the progress bar's total."""
    overwrite: bool = False
    """Replace an existing table instead of resuming it."""
    vectors: VectorSource | None = None
    """The vectors, computed before (``research-index import``); default: embed the passages."""
    ivf_device: str | None = None
    """torch device for the ANN index's k-means and row assignment (default: LanceDB's own)."""

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")

    def run(self, uri: str | Path, passages: Iterable[Passage]) -> PassageIndex:
        """Build (or resume building) the index at ``uri`` from ``passages`` (see :func:`build_index`)."""
        vectors = self.vectors or Embedded(self.embedder)
        db = lancedb.connect(str(uri))
        passages = iter(passages)
        resuming = not self.overwrite and self.table in db.table_names()
        ledger = Ledger(db, resuming)
        done = self._resume(db, ledger, passages, uri) if resuming else 0
        batches = (ledger.check(batch) for batch in _batches(passages, self.batch_size))
        first = next(batches, None)  # read before an existing table is replaced: a bad or empty corpus changes nothing
        if first is None and not done:
            raise ValueError("the corpus holds no passages")
        if not resuming:
            ledger.tbl = db.create_table(self.table, schema=_schema(self.embedder, vectors.dim), mode="overwrite")
            ledger.log = None  # a new build, a new log
        self._write(ledger, vectors, done, chain([first], batches) if first else ())
        _ensure_indices(ledger.tbl, self.ivf_device)
        return PassageIndex(uri, ledger.tbl, self.embedder)

    def _resume(self, db: Any, ledger: Ledger, passages: Iterator[Passage], uri: str | Path) -> int:
        """Open the existing table, check its embedder and its passages against the corpus's first ones (which
        are consumed); the number of passages it holds."""
        tbl = ledger.tbl = db.open_table(self.table)
        check_embedder(tbl, self.embedder, uri)
        done = tbl.count_rows()
        if done:
            ledger.skip_committed(passages, done, uri)
        return done

    def _write(self, ledger: Ledger, vectors: VectorSource, done: int, batches: Iterable[list[Passage]]) -> None:
        """Append the batches with their vectors, one commit in flight while the next batch is embedded; a failure
        waits for it, so the committed prefix stays whole."""
        tbl, schema, total_rows = ledger.tbl, _schema(self.embedder, vectors.dim), done

        def commit(batch: list[Passage], rows: pa.Table) -> int:
            nonlocal total_rows
            tbl.add(rows)
            total_rows += rows.num_rows
            ledger.committed(batch, total_rows)
            return rows.num_rows

        bar = tqdm(total=self.total, initial=done, unit="passage", desc=vectors.label, dynamic_ncols=True,
                   smoothing=0.05)  # fmt: skip
        with ThreadPoolExecutor(1, thread_name_prefix="index-writer") as writer, bar:
            writing: Future | None = None
            for batch, block in vectors.stream(done, batches):
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
                writing = writer.submit(commit, batch, rows)
            if writing is not None:
                bar.update(writing.result())


def build_index(uri: str | Path, passages: Iterable[Passage], **options: Any) -> PassageIndex:
    """Embed ``passages`` into a table at ``uri``, then index it for search; ``options`` are
    :class:`IndexBuild`'s (``embedder`` required; ``batch_size``, ``table``, ``total``, ``overwrite``,
    ``vectors``, ``ivf_device``).

    ``vectors`` gives the vectors instead of embedding the passages (``research-index
    import``); the index still records ``embedder`` as the model its vectors came from.

    Streaming and resumable: passages are read lazily and appended in corpus order,
    one atomic LanceDB commit per batch, so a killed build leaves exactly the first
    N passages. Run it again with the same corpus and it checks those N and goes on
    from N + 1: no passage missing, none twice. A finished index is left as it is.
    Every commit records a digest of everything committed (:mod:`~research.retrieval.ledger`),
    which a resumed build checks against the corpus, so an edited corpus is refused, not mixed in.
    Passage ids must be unique: a repeated one stops the build at its batch (the ids are kept as
    64-bit hashes: about 170 MB for wiki-18's 21M).
    Then a full-text (BM25) index is built, and from :data:`ANN_MIN_ROWS` rows on
    an ANN vector index (:func:`ann_index`), its k-means and row assignment on torch's ``ivf_device``
    when given (:func:`~research.retrieval.ann.build_ann_index`).
    """
    return IndexBuild(**options).run(uri, passages)


def _ensure_indices(tbl: Any, ivf_device: str | None = None) -> None:
    """Build the full-text index, the id index (for fetching a passage by id) and (for large tables) the ANN
    index, unless current; the ANN index's k-means and row assignment on torch's ``ivf_device`` when given
    (:func:`build_ann_index`).

    An index of another kind (an IVF-HNSW-SQ from an earlier version) is rebuilt. The two
    are built side by side: LanceDB builds each mostly on one core (on 500k rows, two
    cores: 35.0 s together against 44.3 s one after the other).
    """
    indexed = {cfg.columns[0]: cfg for cfg in tbl.list_indices()}
    rows = tbl.count_rows()
    wanted = [("contents", FTS()), ("id", BTree()), ("vector", ann_index(rows) if rows >= ANN_MIN_ROWS else None)]
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

    def build(column: str, config: Any) -> None:
        if column == "vector":
            build_ann_index(tbl, rows, ivf_device)
        else:
            tbl.create_index(column, config=config, replace=True)

    with _elapsed(f"indexing ({names})"), ThreadPoolExecutor(len(todo), thread_name_prefix="index") as pool:
        for built in [pool.submit(build, column, config) for column, config in todo]:
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
