"""``research-index``: build, search and serve the LanceDB passage index.

    research-index build --corpus wiki-18.jsonl --index ./wiki18
    research-index import --faiss e5_Flat.index --corpus wiki-18.jsonl.gz --index ./wiki18 \\
        --embedder intfloat/e5-base-v2
    research-index search "who founded Apple" --index ./wiki18 --search-top-k 5
    research-index serve --index ./wiki18 --port 8001

``--index`` takes a local path (embedded LanceDB, the default) or any LanceDB
URI: ``s3://bucket/wiki18`` or ``db://project`` for LanceDB Cloud.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from research.cli import run_command, show_logs
from research.retrieval.embedders import DEFAULT_EMBEDDER, REGISTRY, Embedder
from research.retrieval.index import build_index, built_with, connect, count_lines, read_corpus
from research.wire import SEARCH_MODES


def _target(args: argparse.Namespace) -> str | None:
    """Check ``--index`` can be written before any work; the embedder of an index being resumed."""
    if "://" not in args.index:  # a local folder: check it can be one before loading any model
        folder = Path(args.index)
        if folder.exists() and not folder.is_dir():
            raise ValueError(f"--index {args.index} is a file; give a folder (it is created if missing)")
        parent = next(p for p in (folder, *folder.parents) if p.exists())
        if not os.access(parent, os.W_OK):
            raise ValueError(f"--index {args.index}: {parent} is not writable")
    existing = None if args.overwrite else built_with(args.index)
    if existing and args.embedder and args.embedder != existing:
        raise ValueError(f"the index at {args.index} was built with {existing}, not {args.embedder}; "
                         "resume with its own (drop --embedder) or start over with --overwrite")  # fmt: skip
    return existing


def _build(args: argparse.Namespace) -> None:
    existing = _target(args)
    name = args.embedder or existing or DEFAULT_EMBEDDER
    embedder = Embedder(name, device=args.device, batch_size=args.batch_size, workers=args.workers)
    total = count_lines(args.corpus)
    index = build_index(
        args.index, read_corpus(args.corpus), embedder=embedder, batch_size=args.commit_every, total=total,
        overwrite=args.overwrite,
    )  # fmt: skip
    print(f"{args.index}: {len(index)} passages, embedder {embedder.spec.name} (dim {embedder.dim})")


def _import(args: argparse.Namespace) -> None:
    from research.retrieval.faiss_flat import import_flat

    _target(args)  # --embedder is required: an existing index built with another one is refused here
    embedder = Embedder(args.embedder)
    index = import_flat(
        args.index, args.faiss, args.corpus, embedder=embedder, batch_size=args.commit_every, overwrite=args.overwrite
    )
    print(f"{args.index}: {len(index)} passages, vectors of {embedder.spec.name} from {args.faiss}")


def _search(args: argparse.Namespace) -> None:
    index = connect(args.index, nprobes=args.nprobes)
    for query, hits in zip(args.queries, index.search(args.queries, k=args.search_top_k, mode=args.mode), strict=True):
        print(f"# {query}")
        for rank, p in enumerate(hits, 1):
            text = p.text if len(p.text) <= 200 else p.text[:197] + "..."
            print(f"{rank:>2}. [{p.score:.4f}] {p.title} (id {p.id})\n    {text}")


def _serve(args: argparse.Namespace) -> None:
    import uvicorn

    from research.retrieval.batching import BatchingRetriever
    from research.retrieval.service import create_app

    retriever = BatchingRetriever(connect(args.index, nprobes=args.nprobes), workers=args.search_workers)
    app = create_app(retriever, default_k=args.search_top_k, search_timeout=args.search_timeout)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")


def positive(text: str) -> int:
    """An argparse type: an integer of at least 1."""
    if (value := int(text)) < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_nprobes_arg(p: argparse.ArgumentParser) -> None:
    """``--nprobes``, shared with research-serve."""
    p.add_argument(
        "--nprobes",
        type=positive,
        default=None,
        help="IVF partitions each vector query searches (default: 1%% of them, at least 10); "
        "more finds more of the true nearest passages, more slowly",
    )


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="research-index", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = p.add_subparsers(dest="command", required=True)

    b = sub.add_parser(
        "build",
        help="embed a corpus into a LanceDB index (resumable)",
        description="Embed a wiki-18 .jsonl or DPR .tsv corpus into a LanceDB table, then build its "
        "full-text index and (from 100k passages) an IVF-Flat vector index. Killed midway? "
        "Run the same command again: it checks what was committed and goes on from there.",
    )
    b.add_argument(
        "--corpus", required=True, help="wiki-18 jsonl ({id, contents} a line) or DPR psgs_w100.tsv, or .gz of either"
    )
    b.add_argument("--index", required=True, help="local folder or LanceDB URI (s3://..., db://...)")
    b.add_argument(
        "--embedder",
        help=f"sentence-transformers model (default: an existing index's own, else {DEFAULT_EMBEDDER}; "
        f"prefixes known for: {', '.join(REGISTRY)})",
    )
    b.add_argument(
        "--device",
        default=None,
        help="cpu, cuda, cuda:1, or several comma-separated (cuda:0,cuda:1: one encoder process per GPU); "
        "default: best available",
    )
    b.add_argument("--batch-size", type=positive, default=128, help="passages per embedding forward pass")
    b.add_argument(
        "--workers",
        type=int,
        default=None,
        help="processes tokenising passages ahead of each encoder (default on GPUs: 8 each, fewer if the node's "
        "cores per GPU minus 2 are fewer; on a CPU 0: the encoder wants every core)",
    )
    b.add_argument(
        "--commit-every", type=positive, default=8192, help="passages per LanceDB commit (resume granularity)"
    )
    b.add_argument("--overwrite", action="store_true", help="start over instead of resuming an existing index")
    b.set_defaults(run=_build)

    i = sub.add_parser(
        "import",
        help="build the index from a FAISS flat index and its corpus, without re-embedding (resumable)",
        description="Write the corpus's passages with the vectors of a FAISS IndexFlatIP (e.g. Search-R1's "
        "e5_Flat.index over wiki-18), streamed in corpus order, then build the full-text and vector indexes. "
        "Queries are embedded with --embedder, which must be the model the vectors came from.",
    )
    i.add_argument("--faiss", required=True, help="the FAISS flat index file (IndexFlatIP or IndexFlatL2)")
    i.add_argument("--corpus", required=True, help="its corpus, passages in the index's order (.jsonl, .tsv, .gz)")
    i.add_argument("--index", required=True, help="local folder or LanceDB URI (s3://..., db://...)")
    i.add_argument(
        "--embedder", required=True,
        help=f"the sentence-transformers model the vectors came from (prefixes known for: {', '.join(REGISTRY)})",
    )  # fmt: skip
    i.add_argument(
        "--commit-every", type=positive, default=65536, help="passages per LanceDB commit (resume granularity)"
    )
    i.add_argument("--overwrite", action="store_true", help="start over instead of resuming an existing index")
    i.set_defaults(run=_import)

    s = sub.add_parser("search", help="print the top passages for queries", description="Search an index.")
    s.add_argument("queries", nargs="+", help="one or more queries")
    s.add_argument("--index", required=True, help="local folder or LanceDB URI")
    s.add_argument("--search-top-k", type=positive, default=5, help="passages per query (default 5, as trained)")
    s.add_argument("--mode", choices=SEARCH_MODES, default="vector", help="vector (default), fts (BM25) or hybrid")
    add_nprobes_arg(s)
    s.set_defaults(run=_search)

    v = sub.add_parser(
        "serve",
        help="serve the index over HTTP (ReSearch, Search-R1 and /v1/search APIs)",
        description="Serve POST /search and /batch_search (ReSearch), /retrieve (Search-R1) and /v1/search.",
    )
    v.add_argument("--index", required=True, help="local folder or LanceDB URI")
    v.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: loopback only)")
    v.add_argument("--port", type=int, default=8001, help="port to listen on (default: 8001)")
    v.add_argument(
        "--search-top-k", type=positive, default=5, help="passages when a request does not say (Search-R1's topk)"
    )
    v.add_argument("--search-timeout", type=float, default=10.0, help="seconds a search may take; then 504")
    v.add_argument("--search-workers", type=int, default=4, help="index reads at once (one stuck read holds one)")
    add_nprobes_arg(v)
    v.set_defaults(run=_serve)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    show_logs()
    return run_command("research-index", lambda: args.run(args))


if __name__ == "__main__":
    raise SystemExit(main())
