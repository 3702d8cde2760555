"""What a build has committed, kept checkable in bounded memory: a content digest and the ids' hashes.

* :class:`Digest`: a running BLAKE2b over every committed passage's id and text, in order.
  The build appends ``(rows, digest)`` to a small table beside the passages
  (:data:`LOG_TABLE`) after each commit; a resumed build recomputes the digest over the
  corpus's first rows and compares it at every recorded point, so a corpus edited anywhere
  in the committed part is refused, not mixed in.
* :class:`IdHashes`: the 64-bit hashes of every id so far, 8 bytes an id (about 170 MB at
  wiki-18's 21M passages, against ~1.5 GB for a set of the ids), in 16 buckets of sorted
  runs, so a batch is looked up and added in numpy and no merge copies more than a bucket.
  A hash seen before is only a candidate: the build confirms the id itself (see
  :func:`~research.retrieval.build.build_index`) before calling it a repeat.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import numpy as np

from research.wire import Passage

LOG_TABLE = "build_log"
"""The table of ``(rows, digest)``: the digest of the first ``rows`` passages, after each commit."""
_BUCKETS = 16


class Digest:
    """A running BLAKE2b of passages in order (each id and text length-prefixed, so no two sequences collide)."""

    def __init__(self) -> None:
        self._hash = hashlib.blake2b(digest_size=16)

    def update(self, passages: Iterable[Passage]) -> None:
        for p in passages:
            key, text = p.id.encode(), p.contents.encode()
            self._hash.update(b"%d:%d:" % (len(key), len(text)) + key + text)

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


def id_hashes(ids: Iterable[str]) -> np.ndarray:
    """Each id's 64-bit BLAKE2b hash."""
    return np.array([int.from_bytes(hashlib.blake2b(i.encode(), digest_size=8).digest(), "little") for i in ids],
                    dtype=np.uint64)  # fmt: skip


class IdHashes:
    """The hashes of every id added so far (see the module's docstring)."""

    def __init__(self) -> None:
        self._runs: list[list[np.ndarray]] = [[] for _ in range(_BUCKETS)]
        """Per bucket, sorted arrays, larger first; two of a size merge (a binary counter: O(log n) work an id)."""

    @property
    def nbytes(self) -> int:
        return sum(run.nbytes for runs in self._runs for run in runs)

    def add(self, hashes: np.ndarray) -> np.ndarray:
        """Add ``hashes``; the positions of those seen before (in earlier calls, or earlier in ``hashes``)."""
        seen = np.ones(len(hashes), dtype=bool)
        seen[np.unique(hashes, return_index=True)[1]] = False  # all but each one's first place in the batch
        buckets = (hashes >> np.uint64(60)).astype(np.intp)
        order = np.argsort(buckets, kind="stable")
        bounds = np.searchsorted(buckets[order], np.arange(_BUCKETS + 1))
        for b in np.flatnonzero(np.diff(bounds)):
            where = order[bounds[b] : bounds[b + 1]]
            part = hashes[where]
            for run in self._runs[b]:
                seen[where] |= run[np.minimum(np.searchsorted(run, part), len(run) - 1)] == part
            self._push(self._runs[b], np.sort(part))
        return np.flatnonzero(seen)

    @staticmethod
    def _push(runs: list[np.ndarray], part: np.ndarray) -> None:
        runs.append(part)
        while len(runs) > 1 and len(runs[-1]) * 2 > len(runs[-2]):
            last = runs.pop()
            merged = np.concatenate([runs.pop(), last])
            merged.sort()
            runs.append(merged)
