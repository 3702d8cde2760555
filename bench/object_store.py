"""The same vector index on local disk and on an S3 server: search latency and recall@10, by LanceDB cache setting.

    python bench/object_store.py                  # 20,000 clustered 768-d vectors, 100 queries
    python bench/object_store.py --rows 100000    # moto takes minutes to ingest it

Writes the same vectors to a local folder and to ``s3://research/bench`` on moto's S3 server
(``research.testbed.object_store``, on loopback), builds ``research-index``'s IVF-Flat index on each
(``research.retrieval.ann``), and runs the queries one at a time, as a search server does, through
the same ``nearest`` call. Rows: each store with LanceDB's default caches (the index cache holds
the partitions a query read: the first pass reads them, later ones do not), and with an index
cache too small to hold anything (every query reads its partitions again). Recall@10 is against
exact search. moto is a Python server on loopback: its latency is not S3's, which adds a network
round trip per read (tens of ms); the ratio shows what leaving the cache costs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import lancedb
import numpy as np
import pyarrow as pa
from ann_recall import clustered, recall, torch_exact

from research.retrieval.ann import ann_nprobes, build_ann_index, nearest
from research.testbed.object_store import s3_server


def write(uri: str, vectors: np.ndarray) -> None:
    n, dim = vectors.shape
    data = pa.table({"id": np.arange(n), "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), dim)})
    build_ann_index(lancedb.connect(uri).create_table("v", data), n)


def search(uri: str, queries: np.ndarray, rows: int, session: lancedb.Session | None) -> tuple[list[float], np.ndarray]:
    """Per-query seconds and the ids found, one query at a time on a fresh connection."""
    table = lancedb.connect(uri, session=session).open_table("v")
    seconds, found = [], []
    for q in queries:
        start = time.perf_counter()
        hits = nearest(table, [q], 10, ["id"], nprobes=ann_nprobes(rows))[0]
        seconds.append(time.perf_counter() - start)
        found.append([h["id"] for h in hits])
    return seconds, np.array(found)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=20_000)
    p.add_argument("--queries", type=int, default=100)
    args = p.parse_args()
    vectors = clustered(args.rows + args.queries, 768, max(50, args.rows // 500), np.random.default_rng(0))
    vectors, queries = vectors[: args.rows], vectors[args.rows :]
    truth = torch_exact(vectors, queries, 10)[1]
    table = []
    with tempfile.TemporaryDirectory(prefix="object-store-") as tmp, s3_server(Path(tmp) / "s3", "research") as env:
        os.environ.update(env)
        stores = {"local disk": str(Path(tmp) / "disk"), "S3 (moto)": "s3://research/bench"}
        for name, uri in stores.items():
            start = time.perf_counter()
            write(uri, vectors)
            print(f"{name}: written and indexed in {time.perf_counter() - start:.0f} s", flush=True)
            caches = {"default caches, first pass": None, "default caches, second pass": None,
                      "no index cache": lancedb.Session(index_cache_size_bytes=1)}  # fmt: skip
            warm = lancedb.Session()
            for cache, session in caches.items():
                seconds, found = search(uri, queries, args.rows, session if cache == "no index cache" else warm)
                ms = sorted(s * 1000 for s in seconds)
                p95 = ms[int(0.95 * (len(ms) - 1))]
                table.append((name, cache, statistics.median(ms), p95, recall(found, truth)))
    base = {cache: p50 for name, cache, p50, *_ in table if name == "local disk"}
    probes = ann_nprobes(args.rows)
    print(f"\n{args.rows:,} x 768 vectors, IVF-Flat ({probes} probes), {args.queries} queries one at a time")
    print("| store | cache | p50 ms | p95 ms | p50 vs local disk | recall@10 |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for name, cache, p50, p95, hit in table:
        print(f"| {name} | {cache} | {p50:.1f} | {p95:.1f} | {p50 / base[cache]:.1f}x | {hit:.3f} |")


if __name__ == "__main__":
    main()
