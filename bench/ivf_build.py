"""The index stages after the rows are written, at scale: full-text, and IVF-Flat by k-means sample size.

    python bench/ivf_build.py                                 # 1M clustered 768-d vectors (E5-base-v2's width)
    python bench/ivf_build.py --rows 200000 --sample-rates 256 32

Writes ``--rows`` clustered unit vectors (as ``bench/ann_recall.py`` makes them) with the
bundled corpus's paragraphs (cycled) into a LanceDB table, then times the full-text index
and, for each ``--sample-rates`` value, the IVF-Flat index ``research-index`` builds
(``ann_index``: sqrt(rows) partitions) with its k-means trained on ``sample_rate`` x
partitions rows (research-index uses 64). The baseline is LanceDB's default sample
rate, 256, in the same run.
Then the same index with its k-means and row assignment on torch (``--torch-device``,
default the GPU when there is one: what ``research-index build`` does on a GPU), written
by LanceDB from the precomputed partitions.
Each line gives recall@10 at research-index's nprobes against exact search (torch) on
``--queries`` fresh points, and the wiki-18 (21,015,324 rows) extrapolation: k-means
training grows with partitions x sample (sample = rate x partitions: x21 from 1M),
assigning rows with rows x partitions (x96 from 1M), writing the partitions with rows
(x21). LanceDB's own build is not split into these, so its line is scaled both ways; the
torch line scales each stage by its own rule.
"""

from __future__ import annotations

import argparse
import gzip
import json
import tempfile
import time
from dataclasses import replace
from itertools import cycle, islice
from pathlib import Path

import numpy as np
from ann_recall import clustered, recall, torch_exact

WIKI18_PASSAGES = 21_015_324


def torch_ivf(tbl, rows: int, device: str) -> dict[str, float]:
    """Build research-index's IVF-Flat on ``tbl`` with torch on ``device``: seconds of each stage
    (k-means, assignment, write), from the build's own log records."""
    import logging

    from research.retrieval.ann import build_ann_index

    stages: dict[str, float] = {}

    class Stages(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if hasattr(record, "ivf_stage"):
                stages[record.ivf_stage] = record.seconds

    logger, handler = logging.getLogger("research.retrieval"), Stages()
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        build_ann_index(tbl, rows, device)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    return stages


def wiki18_minutes(stages: dict[str, float], rows: int) -> float:
    """Minutes of the torch IVF build at wiki-18's size: k-means and write x rows, assignment x rows^1.5."""
    scale = WIKI18_PASSAGES / rows
    return (stages["k-means"] * scale + stages["assignment"] * scale**1.5 + stages["write"] * scale) / 60


def main() -> None:
    import lancedb
    import pyarrow as pa
    import torch
    from lancedb.index import FTS

    from research.retrieval.ann import ann_index, ann_nprobes, nearest
    from research.retrieval.demo_corpus import CORPUS

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=1_000_000, help="rows in the table (default 1M)")
    p.add_argument("--dim", type=int, default=768, help="vector width (default 768)")
    p.add_argument("--clusters", type=int, default=2000, help="Gaussian clusters of the vectors (default 2000)")
    p.add_argument(
        "--sample-rates", type=int, nargs="*", default=[256, 64, 16], help="the first is the baseline; none: FTS only"
    )
    p.add_argument("--queries", type=int, default=200, help="queries for recall@10 (default 200)")
    p.add_argument("--torch-device", help="torch device of the torch-built IVF (default: cuda if any, else cpu; none)")
    p.add_argument("--work", type=Path, help="folder for the table (default: a temporary one)")
    args = p.parse_args()
    rng = np.random.default_rng(0)
    vectors = clustered(args.rows + args.queries, args.dim, args.clusters, rng)
    vectors, queries = vectors[: args.rows], vectors[args.rows :]
    truth = torch_exact(vectors, queries, 10)[1]
    with gzip.open(CORPUS, "rt") as f:
        texts = [json.loads(line)["contents"] for line in f]
    rows = []
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        tbl, step = None, 100_000
        for start in range(0, args.rows, step):
            stop = min(args.rows, start + step)
            data = pa.table({
                "id": [str(i) for i in range(start, stop)],
                "contents": list(islice(cycle(texts), start % len(texts), start % len(texts) + stop - start)),
                "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors[start:stop].ravel()), args.dim),
            })  # fmt: skip
            tbl = lancedb.connect(tmp).create_table("passages", data) if tbl is None else tbl
            if start:
                tbl.add(data)
        begin = time.perf_counter()
        tbl.create_index("contents", config=FTS())
        rows.append(("full-text (BM25)", "", time.perf_counter() - begin, None))
        config = ann_index(args.rows)
        nprobes = ann_nprobes(args.rows)
        for rate in args.sample_rates:
            begin = time.perf_counter()
            tbl.create_index("vector", config=replace(config, sample_rate=rate), replace=True)
            seconds = time.perf_counter() - begin
            found = nearest(tbl, queries, 10, ["id"], nprobes=nprobes)
            ids = np.array([[int(r["id"]) for r in hits] for hits in found])
            rows.append((f"IVF-Flat, sample {rate} x {config.num_partitions}", rate, seconds, recall(ids, truth)))
        device = args.torch_device or ("cuda" if torch.cuda.is_available() else "cpu")
        if device != "none":
            stages = torch_ivf(tbl, args.rows, device)
            found = nearest(tbl, queries, 10, ["id"], nprobes=nprobes)
            ids = np.array([[int(r["id"]) for r in hits] for hits in found])
            split = ", ".join(f"{stage} {seconds:.1f} s" for stage, seconds in stages.items())
            name = f"IVF-Flat, sample {config.sample_rate} x {config.num_partitions}, torch on {device} ({split})"
            rows.append((name, config.sample_rate, sum(stages.values()), recall(ids, truth)))
            torch_minutes = wiki18_minutes(stages, args.rows)
    base = rows[1][2] if len(rows) > 1 else None
    scale = WIKI18_PASSAGES / args.rows
    print(f"\n{args.rows:,} rows of {args.dim}, {config.num_partitions} partitions, nprobes {nprobes}")
    print("| index | seconds | vs the first IVF line | recall@10 | wiki-18 (linear) | wiki-18 (x rows x sqrt(rows)) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, rate, seconds, found in rows:
        super_ = "" if rate == "" else f"{seconds * scale**1.5 / 60:.0f} min"
        if "torch" in name:  # each stage by its own rule
            super_ = f"{torch_minutes:.0f} min (by stage)"
        vs = "" if rate == "" else f"{seconds / base:.2f}x"
        hit = "" if found is None else f"{found:.3f}"
        print(f"| {name} | {seconds:.1f} | {vs} | {hit} | {seconds * scale / 60:.0f} min | {super_} |")


if __name__ == "__main__":
    main()
