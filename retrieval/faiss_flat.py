"""Import a FAISS flat index and its corpus into our LanceDB index, without re-embedding.

Search-R1 and FlashRAG users hold E5 indexes of wiki-18 already (Search-R1 publishes
``e5_Flat.index``, an ``IndexFlatIP`` over the corpus in order): 21M x 768 float32,
64 GB. A flat index file is a 45-byte header and then the vectors in corpus order, so
they are streamed out of it in chunks with ``numpy.memmap``, never loaded whole (as
``faiss.read_index`` would), and need no FAISS install. The rows are written by the same
resumable writer as ``research-index build``.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from research.retrieval.build import build_index
from research.retrieval.corpus import count_lines, read_corpus
from research.retrieval.embedders import Embedder
from research.retrieval.index import PassageIndex
from research.wire import Passage

log = logging.getLogger("research.retrieval")

_HEADER = struct.Struct("<4siqqqBiQ")
"""fourcc, dim, ntotal, two unused counters, is_trained, metric type, number of floats (faiss/impl/index_write.cpp)."""
_METRICS = {b"IxFI": "inner_product", b"IxF2": "l2"}
UNIT_TOLERANCE = 1e-3
"""How far from 1 a vector's norm may be and still count as unit-length."""


@dataclass(frozen=True, slots=True)
class FlatVectors:
    """The vectors of a FAISS flat index file, read lazily in corpus order."""

    path: Path
    dim: int
    count: int
    metric: Literal["inner_product", "l2"]
    offset: int

    def read(self, start: int, stop: int) -> np.ndarray:
        """Vectors ``start`` to ``stop - 1`` as a float32 array."""
        if not 0 <= start <= stop <= self.count:
            raise ValueError(f"vectors {start}..{stop} are outside the {self.count} in {self.path}")
        data = np.memmap(self.path, dtype=np.float32, mode="r", offset=self.offset, shape=(self.count, self.dim))
        return np.array(data[start:stop])


def open_flat(path: str | Path) -> FlatVectors:
    """The header of a FAISS ``IndexFlatIP``/``IndexFlatL2`` file; a clear error for anything else."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no FAISS index file at {path}")
    with path.open("rb") as f:
        header = f.read(_HEADER.size)
    if len(header) < _HEADER.size or header[:4] not in _METRICS:
        kind = header[:4].decode("ascii", "replace") if header else "empty"
        raise ValueError(
            f"{path} is not a FAISS flat index (its type tag is {kind!r}; IxFI or IxF2 expected): only flat "
            "indexes hold the vectors themselves (an IVF-PQ or HNSW index would need re-embedding)"
        )
    fourcc, dim, count, _, _, _, _, floats = _HEADER.unpack(header)
    expected = _HEADER.size + 4 * dim * count
    if floats != dim * count or path.stat().st_size != expected:
        raise ValueError(f"{path} is cut short or malformed: {count} vectors of {dim} need {expected} bytes")
    return FlatVectors(path, dim, count, _METRICS[fourcc], _HEADER.size)


@dataclass(slots=True)
class FlatSource:
    """The build's vector source over a flat index; it counts the vectors that are not unit-length."""

    flat: FlatVectors
    label: str = "importing"
    checked: int = 0
    off_unit: int = 0
    lowest_norm: float = np.inf
    highest_norm: float = 0.0

    @property
    def dim(self) -> int:
        return self.flat.dim

    def stream(self, start: int, batches: Iterable[list[Passage]]) -> Iterator[tuple[list[Passage], np.ndarray]]:
        for batch in batches:
            vectors = self.flat.read(start, start + len(batch))
            start += len(batch)
            norms = np.linalg.norm(vectors, axis=1)
            self.checked += len(norms)
            self.off_unit += int(np.count_nonzero(np.abs(norms - 1) > UNIT_TOLERANCE))
            self.lowest_norm = min(self.lowest_norm, float(norms.min()))
            self.highest_norm = max(self.highest_norm, float(norms.max()))
            yield batch, vectors


def import_flat(
    uri: str | Path,
    faiss_index: str | Path,
    corpus: str | Path,
    *,
    embedder: Embedder,
    batch_size: int = 65536,
    overwrite: bool = False,
    ivf_device: str | None = None,
) -> PassageIndex:
    """Write ``corpus``'s passages with the vectors of ``faiss_index`` (same order) to an index at ``uri``.

    ``embedder`` names the model the vectors came from (queries are embedded with it, its
    prefixes included); it is not run here. Resumable like :func:`build_index`. The
    vectors should be unit-length (then inner product is cosine, which E5 was trained
    for and our search assumes); a warning says how many are not.
    """
    flat = open_flat(faiss_index)
    if flat.metric != "inner_product":
        log.warning("%s is an L2 index; its vectors are searched by inner product here", faiss_index)
    total = count_lines(corpus)
    if total != flat.count:
        raise ValueError(
            f"{corpus} holds {total} passages and {faiss_index} {flat.count} vectors: "
            "they must be the same passages in the same order"
        )
    source = FlatSource(flat)
    index = build_index(
        uri, read_corpus(corpus), embedder=embedder, batch_size=batch_size, total=total, overwrite=overwrite,
        vectors=source, ivf_device=ivf_device,
    )  # fmt: skip
    if source.off_unit:
        log.warning(
            "%d of the %d vectors imported now are not unit-length (norms %.4f to %.4f): inner product is not "
            "cosine similarity for them; normalise the vectors before importing to search by cosine",
            source.off_unit, source.checked, source.lowest_norm, source.highest_norm,
        )  # fmt: skip
    elif source.checked:
        log.info("all %d vectors imported now are unit-length: inner product = cosine", source.checked)
    return index
