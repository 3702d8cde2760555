"""Memory of the build's repeated-id check: :class:`IdHashes` against the set of ids it replaced.

    python bench/id_check.py --ids 5000000

Feeds wiki-18-style ids (``"1"``, ``"2"``, …) in commit-sized batches through each and
prints the peak memory (tracemalloc, which numpy reports to) and the time, with both
extrapolated linearly to wiki-18's 21,015,324 passages.
"""

from __future__ import annotations

import argparse
import time
import tracemalloc
from collections.abc import Callable, Iterator

from research.retrieval.ledger import IdHashes, id_hashes

WIKI18 = 21_015_324


def batches(n: int, size: int) -> Iterator[list[str]]:
    """Each batch's ids made as a corpus reader makes them: what a check keeps of them is what it costs."""
    for start in range(1, n + 1, size):
        yield [str(i) for i in range(start, min(start + size, n + 1))]


def with_hashes(n: int, size: int) -> None:
    hashes = IdHashes()
    for batch in batches(n, size):
        assert not len(hashes.add(id_hashes(batch)))


def with_a_set(n: int, size: int) -> None:
    seen: set[str] = set()
    for batch in batches(n, size):
        for i in batch:
            assert i not in seen
            seen.add(i)


def measure(check: Callable[[int, int], None], n: int, size: int) -> tuple[float, float]:
    """(peak MB, seconds)."""
    tracemalloc.start()
    started = time.perf_counter()
    check(n, size)
    seconds = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1] / 1e6
    tracemalloc.stop()
    return peak, seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ids", type=int, default=5_000_000)
    p.add_argument("--batch", type=int, default=8192, help="passages per commit (research-index build's default)")
    args = p.parse_args()
    scale = WIKI18 / args.ids
    print("| check | ids | peak MB | s | peak MB at 21.0M | s at 21.0M |\n| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, check in (("IdHashes (64-bit hashes)", with_hashes), ("set of ids (before)", with_a_set)):
        peak, seconds = measure(check, args.ids, args.batch)
        print(f"| {name} | {args.ids:,} | {peak:.0f} | {seconds:.1f} | {peak * scale:.0f} | {seconds * scale:.0f} |")


if __name__ == "__main__":
    main()
