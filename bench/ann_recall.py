"""ANN quality and speed: LanceDB's vector index (as research-index builds it) vs FAISS, same vectors.

    pip install faiss-cpu
    python bench/ann_recall.py                     # 1M clustered 768-d vectors (the E5 dimension)
    python bench/ann_recall.py --n 200000 --queries 500

Vectors: ``--clusters`` Gaussian clusters on the unit sphere (real embeddings are
clustered, uniform random ones are not), normalised; queries are fresh points from
the same clusters. Ground truth: exact inner-product top-10 (FAISS flat; a torch
matrix product + topk is timed too, the faster exact search on some CPUs). Prints,
per set-up and search setting, recall@10 against that truth, batched queries/s, the
ratio to the same engine's exact search and to FAISS flat in the same run, plus build
times. LanceDB runs through ``research.retrieval.ann.nearest``, the query
research-index makes, on the index ``ann_index`` sizes; ``(ours)`` marks the nprobes
research-index uses. FAISS IVFFlat gets as many partitions, FAISS HNSW32 its defaults.
``--only faiss`` skips LanceDB (its exact search is the slow part); ``--clusters``
changes how the vectors cluster (fewer, larger clusters are harder for IVF).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np


def clustered(n: int, dim: int, clusters: int, rng: np.random.Generator) -> np.ndarray:
    centers = rng.standard_normal((clusters, dim), dtype=np.float32)
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 100_000):
        stop = min(n, start + 100_000)
        out[start:stop] = centers[rng.integers(0, clusters, stop - start)]
        out[start:stop] += 0.6 * rng.standard_normal((stop - start, dim), dtype=np.float32)
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth, strict=True)]))


def torch_exact(vectors: np.ndarray, queries: np.ndarray, k: int, block: int = 250) -> tuple:
    """Exact top-``k`` by one matrix product per block of queries: the other exact baseline."""
    import torch

    base = torch.from_numpy(vectors)
    hits = [torch.topk(torch.from_numpy(queries[i : i + block]) @ base.T, k) for i in range(0, len(queries), block)]
    return torch.cat([h.values for h in hits]).numpy(), torch.cat([h.indices for h in hits]).numpy()


def report(rows: list[tuple], name: str, label: str, found: np.ndarray, seconds: float, truth: np.ndarray) -> None:
    """Add a row (recall@k against ``truth``, queries/s) to ``rows`` and print it as it comes."""
    rows.append((name, label, recall(found, truth), len(truth) / seconds))
    print(f"  {name} {label}: recall@10 {rows[-1][2]:.3f}, {rows[-1][3]:.0f} q/s", flush=True)


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


NPROBES = (1, 2, 5, 10, 20, 50)


def bench_lancedb(vectors: np.ndarray, queries: np.ndarray, truth: np.ndarray, k: int) -> list[tuple]:
    """LanceDB exact search, then the index research-index builds at each nprobes."""
    import lancedb
    import pyarrow as pa

    from research.retrieval.ann import ann_index, ann_nprobes, nearest

    rows = []
    tmp = Path(tempfile.mkdtemp(prefix="ann-bench-"))
    try:
        n, dim = vectors.shape
        vec = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), dim)
        tbl = lancedb.connect(str(tmp)).create_table("v", pa.table({"id": pa.array(np.arange(n)), "vector": vec}))

        def lance(nprobes: int | None) -> tuple[np.ndarray, float]:
            def run():
                found = [[r["id"] for r in hits] for hits in nearest(tbl, queries, k, ["id"], nprobes=nprobes)]
                return np.array([f + [-1] * (k - len(f)) for f in found])

            return timed(run)

        report(rows, "lancedb exact (no index)", "-", *lance(None), truth)
        index = ann_index(n)
        name = f"lancedb {type(index).__name__}"
        _, build_s = timed(lambda: tbl.create_index("vector", config=index))
        print(f"{name} ({index.num_partitions} partitions) built in {build_s:.0f} s", flush=True)
        nearest(tbl, queries, k, ["id"], nprobes=max(NPROBES))  # the first query loads the index
        ours = ann_nprobes(n)
        for nprobes in sorted({*NPROBES, ours}):
            report(rows, name, f"nprobes={nprobes}" + (" (ours)" if nprobes == ours else ""), *lance(nprobes), truth)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return rows


def bench_faiss(vectors: np.ndarray, queries: np.ndarray, truth: np.ndarray, k: int) -> list[tuple]:
    """FAISS IVFFlat (as many partitions as ours, trained on as many samples) at each nprobe, then
    HNSW32 (efConstruction 40, its default) at each efSearch."""
    import faiss

    from research.retrieval.ann import ann_partitions

    rows = []
    n, dim = vectors.shape
    parts = ann_partitions(n)
    ivf = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, parts, faiss.METRIC_INNER_PRODUCT)
    sample = vectors[np.random.default_rng(1).choice(n, min(n, 256 * parts), replace=False)]
    _, build_s = timed(lambda: (ivf.train(sample), ivf.add(vectors)))
    print(f"faiss IVFFlat ({parts} partitions) built in {build_s:.0f} s", flush=True)
    for nprobe in NPROBES:
        ivf.nprobe = nprobe
        (_, found), seconds = timed(lambda: ivf.search(queries, k))
        report(rows, "faiss IVFFlat", f"nprobe={nprobe}", found, seconds, truth)
    hnsw = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
    hnsw.hnsw.efConstruction = 40
    _, build_s = timed(lambda: hnsw.add(vectors))
    print(f"faiss HNSW32 built in {build_s:.0f} s", flush=True)
    for ef in (50, 100, 200, 400, 800, 1600):
        hnsw.hnsw.efSearch = ef
        (_, found), seconds = timed(lambda: hnsw.search(queries, k))
        report(rows, "faiss HNSW32", f"efSearch={ef}", found, seconds, truth)
    return rows


def main() -> None:
    import faiss

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=768)
    p.add_argument("--clusters", type=int, default=1000)
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--only", nargs="+", choices=["lancedb", "faiss"], default=["lancedb", "faiss"])
    args = p.parse_args()
    rng = np.random.default_rng(0)
    data = clustered(args.n + args.queries, args.dim, args.clusters, rng)
    vectors, queries = data[: args.n], data[args.n :]
    k, rows = args.k, []

    flat = faiss.IndexFlatIP(args.dim)
    flat.add(vectors)
    (_, truth), exact_s = timed(lambda: flat.search(queries, k))
    exact_qps = len(queries) / exact_s
    rows.append(("faiss flat (exact)", "-", 1.0, exact_qps))
    print(f"faiss flat: {exact_qps:.0f} q/s", flush=True)
    (_, found), seconds = timed(lambda: torch_exact(vectors, queries, k))
    report(rows, "torch exact (matmul+topk)", "-", found, seconds, truth)

    if "lancedb" in args.only:
        rows += bench_lancedb(vectors, queries, truth, k)
    if "faiss" in args.only:
        rows += bench_faiss(vectors, queries, truth, k)

    print(f"\n{args.n:,} vectors x {args.dim}-d, {args.clusters} clusters, {len(queries)} queries (one batch), top-{k}")
    print(f"{'set-up':<26}{'setting':<22}{'recall@10':>10}{'q/s':>10}{'vs exact':>10}{'vs flat':>13}")
    lance_exact_qps = next((qps for name, *_, qps in rows if name.startswith("lancedb exact")), None)
    for name, setting, r, qps in rows:
        base = lance_exact_qps if name.startswith("lancedb") else exact_qps
        print(f"{name:<26}{setting:<22}{r:>10.3f}{qps:>10.0f}{qps / base:>9.1f}x{qps / exact_qps:>12.1f}x")


if __name__ == "__main__":
    main()
