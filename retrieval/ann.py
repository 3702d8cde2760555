"""The ANN vector index: how many IVF partitions, how many a query probes, and the batched nearest-row query."""

from __future__ import annotations

import logging
import math
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from lancedb.index import IvfFlat

log = logging.getLogger("research.retrieval")

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


def build_ann_index(table: Any, rows: int, device: str | None = None) -> None:
    """Build (or replace) :func:`ann_index` on ``table``'s vectors.

    ``device`` None: LanceDB trains the k-means and assigns the rows on the CPU. A torch
    device (``cuda``, ``cuda:1``, ``cpu``): Lance's torch k-means trains the centroids on the same
    sample and assigns every row to its partition there, and LanceDB writes the index from
    those precomputed partitions (its IVF-PQ-only ``accelerator`` path does this for IVF-Flat).
    The same index either way (same recall on 1M vectors, ``bench/ivf_build.py``); on a
    GPU the two steps that grow fastest with the corpus leave the CPU.
    """
    config = ann_index(rows)
    if device is None:
        table.create_index("vector", config=config, replace=True)
        return
    dataset = table.to_lance()
    with warnings.catch_warnings():  # Lance's torch reader on a CPU: read-only arrays, pin_memory without a GPU
        warnings.filterwarnings("ignore", "The given NumPy array is not writable", UserWarning)
        warnings.filterwarnings("ignore", "'pin_memory' argument is set as true", UserWarning)
        _torch_ivf(dataset, config, device)
    table.checkout_latest()


def _torch_ivf(dataset: Any, config: IvfFlat, device: str) -> None:
    import torch
    from lance.vector import compute_partitions, train_ivf_centroids_on_accelerator

    with _stage("k-means", device):
        centroids, kmeans = train_ivf_centroids_on_accelerator(
            dataset, "vector", config.num_partitions, "dot", torch.device(device), sample_rate=config.sample_rate
        )
    with tempfile.TemporaryDirectory(prefix="ivf-partitions-") as tmp:
        with _stage("assignment", device):
            partitions = compute_partitions(dataset, "vector", kmeans, dst_dataset_uri=tmp)
        with _stage("write", "cpu"):
            dataset.create_index(
                "vector", "IVF_FLAT", metric="dot", num_partitions=config.num_partitions, ivf_centroids=centroids,
                precomputed_partition_dataset=partitions, replace=True,
            )  # fmt: skip


@contextmanager
def _stage(stage: str, device: str) -> Iterator[None]:
    """Log a stage of the torch IVF build with its seconds (``extra``: ``ivf_stage``, ``seconds``)."""
    start = time.perf_counter()
    yield
    seconds = time.perf_counter() - start
    log.info("IVF %s on %s: %.1f s", stage, device, seconds, extra={"ivf_stage": stage, "seconds": seconds})


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
