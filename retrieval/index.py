"""The LanceDB passage index: build it from passages, open it, search it.

Shaped like LanceDB itself: :func:`connect` takes the URI (a local path by default,
any LanceDB URI such as ``s3://bucket/wiki18`` or ``db://project`` for scale-out)
and returns a :class:`PassageIndex` whose :meth:`~PassageIndex.search` is batched:
many queries, one embedding call, one vector query.

The table records the embedder that built it (name, prefixes, dimension) in its
schema metadata; opening it with another embedder is an :class:`IndexMismatchError`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from itertools import islice
from pathlib import Path
from typing import Any

import lancedb
import pyarrow as pa
from research.retrieval.embedders import Embedder
from research.retrieval.passage import Passage
from tqdm import tqdm

TABLE = "passages"
_META = {
    "embedder": b"research.embedder",
    "query_prefix": b"research.query_prefix",
    "passage_prefix": b"research.passage_prefix",
    "dim": b"research.dim",
}


class IndexMismatchError(ValueError):
    """The index was built with another embedder than the one asked for."""


def read_jsonl(path: str | Path) -> Iterator[Passage]:
    """Passages of a wiki-18 jsonl file (one ``{"id", "contents"}`` object a line)."""
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    row = json.loads(line)
                    yield Passage(str(row["id"]), row["contents"])
                except (json.JSONDecodeError, KeyError) as exc:
                    raise ValueError(f"{path}:{n}: not a wiki-18 passage ({exc})") from None


def _batches(items: Iterable[Passage], size: int) -> Iterator[list[Passage]]:
    it = iter(items)
    while batch := list(islice(it, size)):
        yield batch


def _schema(embedder: Embedder) -> pa.Schema:
    spec = embedder.spec
    metadata = {
        _META["embedder"]: spec.name.encode(),
        _META["query_prefix"]: spec.query_prefix.encode(),
        _META["passage_prefix"]: spec.passage_prefix.encode(),
        _META["dim"]: str(embedder.dim).encode(),
    }
    fields = [
        pa.field("id", pa.string()),
        pa.field("contents", pa.string()),
        pa.field("vector", pa.list_(pa.float32(), embedder.dim)),
    ]
    return pa.schema(fields, metadata=metadata)


def build_index(
    uri: str | Path,
    passages: Iterable[Passage],
    *,
    embedder: Embedder,
    batch_size: int = 1024,
    table: str = TABLE,
    total: int | None = None,
) -> PassageIndex:
    """Embed ``passages`` in batches into a new table ``table`` at ``uri``."""
    schema = _schema(embedder)
    db = lancedb.connect(str(uri))
    tbl = db.create_table(table, schema=schema, mode="overwrite")
    with tqdm(total=total, unit="passage", desc="indexing") as bar:
        for batch in _batches(passages, batch_size):
            vectors = embedder.encode_passages([p.contents for p in batch])
            tbl.add(
                pa.table(
                    {
                        "id": [p.id for p in batch],
                        "contents": [p.contents for p in batch],
                        "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), embedder.dim),
                    },
                    schema=schema,
                )
            )
            bar.update(len(batch))
    return PassageIndex(uri, tbl, embedder)


class PassageIndex:
    """An open passage table and the embedder its vectors came from."""

    def __init__(self, uri: str | Path, table: Any, embedder: Embedder) -> None:
        self.uri = str(uri)
        self.table = table
        self.embedder = embedder

    def __len__(self) -> int:
        return self.table.count_rows()

    def search(self, queries: Sequence[str], *, k: int = 5) -> list[list[Passage]]:
        """Top-``k`` passages for each query, best first, scored by cosine similarity."""
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        if not queries:
            return []
        vectors = self.embedder.encode_queries(list(queries))
        rows = (
            self.table.search(list(vectors) if len(vectors) > 1 else vectors[0])
            .distance_type("dot")
            .limit(k)
            .select(["id", "contents"])
            .to_arrow()
            .to_pylist()
        )
        out: list[list[Passage]] = [[] for _ in queries]
        for row in rows:
            out[row.get("query_index", 0)].append(Passage(row["id"], row["contents"], 1.0 - row["_distance"]))
        return out


def connect(uri: str | Path, *, embedder: str | Embedder | None = None, table: str = TABLE) -> PassageIndex:
    """Open the passage index at ``uri``; ``embedder`` defaults to the one that built it."""
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
    if built_with and embedder.spec.name != built_with:
        raise IndexMismatchError(
            f"the index at {uri} was built with {built_with!r}; searching it with {embedder.spec.name!r} "
            "would compare vectors from different models. Pass embedder=None to use the index's own."
        )
    return PassageIndex(uri, tbl, embedder)
