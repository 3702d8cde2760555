"""``research-index import`` at scale: a FAISS flat index of N vectors into LanceDB, stage by stage.

    python bench/import_throughput.py                  # 1M vectors of E5-base-v2's width (768)
    python bench/import_throughput.py --rows 100000    # a quicker run

Builds a FAISS ``IndexFlatIP`` of ``--rows`` random unit vectors (with FAISS itself, as
Search-R1's ``e5_Flat.index`` is built) and a wiki-18-style ``.jsonl.gz`` corpus of as
many passages (the bundled corpus's real paragraphs, cycled, with unique ids), then
times ``import_flat``: writing the rows (passages + vectors, resumable commits), then the
full-text and IVF vector indexes (built side by side). The baseline, in the same run, is LanceDB's own
write of the same vectors and texts from memory (no corpus reading, no checks): the
writer's ceiling. Prints a table and the wiki-18 (21,015,324 passages) extrapolation.
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import tempfile
import time
from itertools import cycle, islice
from pathlib import Path

WIKI18_PASSAGES = 21_015_324


class Stages(logging.Handler):
    """The time each "building the ... index" line of the import was logged."""

    def __init__(self) -> None:
        super().__init__()
        self.marks: list[tuple[float, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.marks.append((time.perf_counter(), record.getMessage()))


def make_inputs(work: Path, rows: int, dim: int, chunk: int = 100_000) -> tuple[Path, Path]:
    import faiss
    import numpy as np

    from research.retrieval.demo_corpus import CORPUS

    with gzip.open(CORPUS, "rt") as f:
        texts = [json.loads(line)["contents"] for line in f]
    corpus = work / "corpus.jsonl.gz"
    with gzip.open(corpus, "wt", compresslevel=1) as out:
        for i, text in enumerate(islice(cycle(texts), rows)):
            out.write(json.dumps({"id": str(i), "contents": text}) + "\n")
    flat, rng = faiss.IndexFlatIP(dim), np.random.default_rng(0)
    for start in range(0, rows, chunk):
        block = rng.standard_normal((min(chunk, rows - start), dim), dtype=np.float32)
        flat.add(block / np.linalg.norm(block, axis=1, keepdims=True))
    path = work / "e5_Flat.index"
    faiss.write_index(flat, str(path))
    return corpus, path


def baseline(work: Path, flat: Path, corpus: Path, batch: int) -> float:
    """Seconds for LanceDB to write the same rows from memory in the same commits."""
    import lancedb
    import pyarrow as pa

    from research.retrieval.faiss_flat import open_flat

    vectors = open_flat(flat)
    with gzip.open(corpus, "rt") as f:
        rows = [json.loads(line) for line in f]
    db = lancedb.connect(str(work / "baseline"))
    start, tbl = time.perf_counter(), None
    for i in range(0, len(rows), batch):
        part = rows[i : i + batch]
        data = pa.table({
            "id": [r["id"] for r in part], "contents": [r["contents"] for r in part],
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.read(i, i + len(part)).ravel()), vectors.dim),
        })  # fmt: skip
        tbl = db.create_table("passages", data) if tbl is None else tbl
        if i:
            tbl.add(data)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000, help="vectors and passages (default 1M)")
    parser.add_argument("--dim", type=int, default=768, help="vector width (default 768, E5-base-v2's)")
    parser.add_argument("--commit-every", type=int, default=65536, help="rows per LanceDB commit (the CLI's default)")
    parser.add_argument("--work", type=Path, help="folder for the inputs and indexes (default: a temporary one)")
    args = parser.parse_args()

    from research.retrieval import Embedder
    from research.retrieval.faiss_flat import import_flat

    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        corpus, flat = make_inputs(work, args.rows, args.dim)
        print(f"inputs: {args.rows:,} passages, {flat.stat().st_size / 2**30:.2f} GiB of vectors "
              f"({time.perf_counter() - t0:.0f} s to make)")  # fmt: skip
        stages = Stages()
        logging.getLogger("research.retrieval").addHandler(stages)
        logging.getLogger("research.retrieval").setLevel(logging.INFO)
        start = time.perf_counter()
        index = import_flat(work / "index", flat, corpus, embedder=Embedder("intfloat/e5-base-v2"),
                            batch_size=args.commit_every)  # fmt: skip
        end = time.perf_counter()
        assert len(index) == args.rows
        builds = [(t, m) for t, m in stages.marks if m.startswith("building the")]
        write_end = builds[0][0] if builds else end
        rows = [("write rows (read corpus + vectors, commit)", write_end - start)]
        for (t, message), (t_next, _) in zip(builds, [*builds[1:], (end, "")], strict=True):
            rows.append((message.removeprefix("building the "), t_next - t))
        base = baseline(work, flat, corpus, args.commit_every)

    def line(name: str, seconds: float) -> str:
        wiki18 = seconds * WIKI18_PASSAGES / args.rows / 60
        return f"| {name} | {seconds:.1f} | {args.rows / seconds:,.0f} | {wiki18:.0f} min |"

    print(f"\n| stage | seconds | rows/s | wiki-18 (x{WIKI18_PASSAGES / args.rows:.1f}, linear) |")
    print("| --- | --- | --- | --- |")
    for name, seconds in rows:
        print(line(name, seconds))
    print(line("import, all stages", end - start))
    print(line("baseline: LanceDB writing the same rows from memory", base))
    print(f"\nwriting rows: {rows[0][1] / base:.2f}x the baseline's time")
    print("(the IVF line extrapolates linearly; k-means over more rows and partitions grows faster than that)")


if __name__ == "__main__":
    main()
