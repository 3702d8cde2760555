"""The web search cache's size and lookup latency after many distinct queries (issue #49).

    python bench/web_cache.py                       # 100,000 queries at the default bound (512 MB)
    python bench/web_cache.py --max-mb 64           # the same, past the bound: the least recently used go

Each query stores what a web search keeps: ``--k`` pages of ``--words`` words (the defaults: 5 pages of
100 words, a wiki-18 passage's length). Prints one table: rows kept, the database's pages in use
(what the bound counts), the files' size on disk (database and write-ahead log), the write time per query, and the
latency of a lookup that hits and one that misses, p50/p95 over ``--lookups`` random queries; the
unbounded cache (no pruning) runs beside it as the baseline.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path

from tqdm import tqdm

from research.retrieval import WebCache
from research.retrieval.web import CACHE_MAX_BYTES
from research.wire import Passage


def pages(rng: random.Random, k: int, words: int) -> list[Passage]:
    vocabulary = [
        "the",
        "of",
        "and",
        "in",
        "to",
        "a",
        "was",
        "is",
        "for",
        "on",
        "as",
        "by",
        "with",
        "he",
        "at",
        "from",
        "his",
        "an",
        "were",
        "are",
        "which",
    ]
    return [
        Passage(url, f'"Page {i}"\n' + " ".join(rng.choices(vocabulary, k=words)), 1.0 / (i + 1), url)
        for i in range(k)
        if (url := f"https://site{rng.randrange(10**6)}.example/{i}")
    ]


def p(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def run(folder: Path, queries: int, max_bytes: int | None, k: int, words: int, lookups: int) -> dict[str, str]:
    rng = random.Random(0)
    path = folder / f"cache-{max_bytes}.sqlite"
    cache = WebCache(path, ttl=10**9, max_bytes=max_bytes or 2**62)
    started = time.perf_counter()
    for i in tqdm(range(queries), desc=f"writing (bound {max_bytes or 'none'})", unit="query", mininterval=2):
        cache.put(f"query {i}", pages(rng, k, words))
    write = (time.perf_counter() - started) / queries
    cache.prune()
    kept = len(cache)
    recent = range(queries - kept, queries)  # what the bound keeps: the most recently used
    hits, misses = [], []
    for _ in range(lookups):
        key = f"query {rng.choice(recent)}"
        started = time.perf_counter()
        assert cache.get(key) is not None
        hits.append(time.perf_counter() - started)
        started = time.perf_counter()
        assert cache.get(f"never asked {rng.random()}") is None
        misses.append(time.perf_counter() - started)
    disk = sum(f.stat().st_size for f in folder.glob(path.name + "*"))
    used = cache.disk_bytes()
    cache.close()
    return {
        "bound": f"{max_bytes / 2**20:.0f} MB" if max_bytes else "none",
        "rows kept": f"{kept:,}",
        "database MB": f"{used / 2**20:.1f}",
        "file MB": f"{disk / 2**20:.1f}",
        "write ms/query": f"{1000 * write:.3f}",
        "hit p50/p95 ms": f"{1000 * p(hits, 50):.3f} / {1000 * p(hits, 95):.3f}",
        "miss p50/p95 ms": f"{1000 * p(misses, 50):.3f} / {1000 * p(misses, 95):.3f}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queries", type=int, default=100_000)
    parser.add_argument("--max-mb", type=float, default=CACHE_MAX_BYTES / 2**20, help="the bound (default 512)")
    parser.add_argument("--k", type=int, default=5, help="pages a query")
    parser.add_argument("--words", type=int, default=100, help="words a page")
    parser.add_argument("--lookups", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        rows = [
            run(Path(folder), args.queries, None, args.k, args.words, args.lookups),
            run(Path(folder), args.queries, int(args.max_mb * 2**20), args.k, args.words, args.lookups),
        ]
    print(f"\n{args.queries:,} distinct queries, {args.k} pages of {args.words} words each")
    print("| " + " | ".join(rows[0]) + " |")
    print("|" + " --- |" * len(rows[0]))
    for row in rows:
        print("| " + " | ".join(row.values()) + " |")


if __name__ == "__main__":
    main()
