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
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from research.cli import add_fields, check_at_least_one, from_args, run_command, show_logs
from research.http_errors.head import Listen
from research.retrieval.embedders import DEFAULT_EMBEDDER, Embedder
from research.retrieval.remote import MAX_REPLY_BYTES, RemoteIndex, RetrieverAPI, infer_api
from research.retrieval.web import CACHE_MAX_BYTES, PROVIDERS, WebProvider
from research.wire import DEFAULT_K, SearchMode

if TYPE_CHECKING:
    from research.retrieval.batching import BatchingRetriever
    from research.retrieval.index import PassageIndex
    from research.retrieval.web import WebSearch

log = logging.getLogger("research.retrieval")


@dataclass(frozen=True, kw_only=True)
class IndexArgs:
    """The passage index a command reads, and how a vector query searches it."""

    index: str | None = None
    """passage index: local folder or LanceDB URI (s3://..., db://...)"""
    nprobes: int | None = None
    """IVF partitions each vector query searches (default: 1% of them, at least 10); more finds more of the true
    nearest passages, more slowly"""

    def __post_init__(self) -> None:
        check_at_least_one(self, "nprobes")

    def open(self) -> PassageIndex:
        from research.retrieval.index import connect

        if self.index is None:
            raise ValueError("--index is required")
        return connect(self.index, nprobes=self.nprobes)


@dataclass(frozen=True, kw_only=True)
class RetrieverArgs(IndexArgs):
    """Where searches go, many at once: a local index (``--index``) or a running retriever (``--retriever``),
    behind a batching front (``research-serve``, ``research-index serve``, ``research-eval``, ``research-train``)."""

    retriever: str | None = None
    """or a running retriever instead of --index: Search-R1's (http://host:8000/retrieve), ReSearch's
    (.../batch_search) or a research-serve / research-index serve (.../v1/search)"""
    retriever_api: RetrieverAPI | None = None
    """the API --retriever speaks (default: inferred from the URL's path)"""
    retriever_max_bytes: int = MAX_REPLY_BYTES
    """most bytes of a --retriever's or web search's reply read per query it answers (default 2 MiB; a hundred
    wiki-18 passages are ~70 KB): a larger reply is dropped and its search fails, naming the size"""
    web_search: WebProvider | None = None
    """or search the web instead: searxng (self-hosted: --web-search-url), brave ($BRAVE_API_KEY), tavily
    ($TAVILY_API_KEY) or serper ($SERPER_API_KEY); each result a passage with its URL"""
    web_search_url: str | None = None
    """the web search API's endpoint (SearXNG's, e.g. http://localhost:8080/search; default: the provider's own)"""
    web_fetch_pages: bool = False
    """read each web result's page for its main text (trafilatura; at most 10 s, 2 MB and 200 words a page)
    instead of the provider's snippet"""
    web_cache_ttl: float = 7 * 86400
    """seconds a query's web results are reused from $RESEARCH_CACHE/web-search.sqlite (default a week; 0: no
    cache), so a repeated evaluation or epoch makes no provider call"""
    web_cache_max_mb: float = CACHE_MAX_BYTES / 2**20
    """most MB the web cache's database takes (its 16 MB write-ahead log aside): past it the least recently used
    results go, expired ones first"""
    web_concurrency: int = 4
    """web search API calls at once"""
    search_workers: int = 4
    """index reads run at once (each a batch of queued searches); one stuck read does not stall the rest"""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_at_least_one(self, "search_workers", "web_concurrency", "retriever_max_bytes")
        if sum(map(bool, (self.index, self.retriever, self.web_search))) > 1:
            raise ValueError("give one of --index, --retriever and --web-search")
        if self.retriever_api and not self.retriever:
            raise ValueError("--retriever-api goes with --retriever")
        if (self.web_search_url or self.web_fetch_pages) and not self.web_search:
            raise ValueError("--web-search-url and --web-fetch-pages go with --web-search")
        if self.web_cache_ttl < 0:
            raise ValueError(f"--web-cache-ttl must be at least 0, got {self.web_cache_ttl:g}")
        if self.web_cache_max_mb <= 0:
            raise ValueError(f"--web-cache-max-mb must be above 0, got {self.web_cache_max_mb:g}")
        if self.web_search:  # a missing key or URL is said before any model loads
            PROVIDERS[self.web_search].resolve(self.web_search_url, None)

    @property
    def searched(self) -> str | None:
        """Where searches go, as one value (None: nowhere): the index, the retriever's URL or the web provider."""
        if self.web_search:
            return f"web:{self.web_search}" + (":pages" if self.web_fetch_pages else "")
        return self.index or self.retriever

    @property
    def source(self) -> str:
        """What is searched, in words (for logs)."""
        if self.web_search:
            return f"the web ({self.web_search})"
        return f"the {self.retriever_api or infer_api(self.retriever)} retriever at {self.retriever}" \
            if self.retriever else f"the index at {self.index}"  # fmt: skip

    def web(self) -> WebSearch:
        """The web search, its results cached on local disk unless ``web_cache_ttl`` is 0."""
        from research.retrieval.web import PageReader, WebCache, WebSearch, default_cache_path

        assert self.web_search is not None
        cache = None
        if self.web_cache_ttl:
            cache = WebCache(default_cache_path(), self.web_cache_ttl, max_bytes=int(self.web_cache_max_mb * 2**20))
        pages = PageReader() if self.web_fetch_pages else None
        return WebSearch(
            self.web_search, self.web_search_url, pages=pages, cache=cache, concurrency=self.web_concurrency,
            max_bytes=self.retriever_max_bytes,
        )  # fmt: skip

    def remote(self) -> RemoteIndex:
        """The running retriever, its API named or inferred (and the inference logged)."""
        assert self.retriever is not None
        remote = RemoteIndex(self.retriever, self.retriever_api, max_bytes=self.retriever_max_bytes)
        if self.retriever_api is None:
            log.info("searching the %r: the API inferred from the URL's path (--retriever-api to say)", remote)
        return remote

    def open_retriever(self) -> BatchingRetriever:
        """The index (warmed up) or the running retriever behind a batching front (concurrent searches share
        requests)."""
        from research.retrieval.batching import BatchingRetriever

        if not (self.index or self.retriever or self.web_search):
            raise ValueError("searches need passages: give --index PATH_OR_URI, --retriever URL or --web-search "
                             "PROVIDER")  # fmt: skip
        if self.retriever:
            return BatchingRetriever(self.remote(), workers=self.search_workers)
        if self.web_search:
            return BatchingRetriever(self.web(), workers=self.search_workers)
        index = self.open()
        index.warm_up()
        return BatchingRetriever(index, workers=self.search_workers)


REMOTE = ("retriever", "retriever_api", "retriever_max_bytes", "web_search", "web_search_url", "web_fetch_pages",
          "web_cache_ttl", "web_cache_max_mb", "web_concurrency")  # fmt: skip
"""RetrieverArgs' fields for searching elsewhere than a local index (research-index reads its own)."""


@dataclass(frozen=True, kw_only=True)
class Target:
    """The index a build writes, from which corpus."""

    corpus: str
    """wiki-18 jsonl ({id, contents} a line) or DPR psgs_w100.tsv, or .gz of either (for import: in the FAISS
    index's order)"""
    index: str
    """local folder or LanceDB URI (s3://..., db://...); a folder is created if missing"""
    overwrite: bool = False
    """start over instead of resuming an existing index"""
    commit_every: int = 8192
    """passages per LanceDB commit (resume granularity)"""
    ivf_device: str | None = None
    """where the IVF vector index's k-means and partition assignment run (from 100k passages): a torch device
    (cuda, cuda:1, cpu) or lancedb (LanceDB's own build); default: the GPU when there is one (build: the first of
    --device), else the CPU with torch (on 1M vectors, two cores: 58 s against LanceDB's 86 s, same recall)"""

    def __post_init__(self) -> None:
        check_at_least_one(self, "commit_every")
        if self.ivf_device is not None and not re.fullmatch(r"lancedb|cpu|mps|cuda(:\d+)?", self.ivf_device):
            raise ValueError(f"--ivf-device must be lancedb, cpu, mps, cuda or cuda:N, got {self.ivf_device!r}")

    def ivf_torch_device(self, device: str | None = None) -> str | None:
        """The torch device of the IVF build (None: LanceDB's own), ``device`` the one the build embeds on;
        checked before any work (the IVF index is built last)."""
        import torch

        if self.ivf_device == "lancedb":
            return None
        if self.ivf_device is not None:
            if self.ivf_device.startswith("cuda") and not torch.cuda.is_available():
                raise ValueError(f"--ivf-device {self.ivf_device}: no CUDA device here (use cpu or lancedb)")
            return self.ivf_device
        if device is not None:
            first = device.split(",")[0]
            return first if first.startswith("cuda") else "cpu"
        return "cuda" if torch.cuda.is_available() else "cpu"

    def check(self, embedder: str | None) -> str | None:
        """Check the index can be written before any work; the embedder of an index being resumed."""
        from research.retrieval.index import built_with

        if "://" not in self.index:  # a local folder: check it can be one before loading any model
            folder = Path(self.index)
            if folder.exists() and not folder.is_dir():
                raise ValueError(f"--index {self.index} is a file; give a folder (it is created if missing)")
            parent = next(p for p in (folder, *folder.parents) if p.exists())
            if not os.access(parent, os.W_OK):
                raise ValueError(f"--index {self.index}: {parent} is not writable")
        existing = None if self.overwrite else built_with(self.index)
        if existing and embedder and embedder != existing:
            raise ValueError(f"the index at {self.index} was built with {existing}, not {embedder}; "
                             "resume with its own (drop --embedder) or start over with --overwrite")  # fmt: skip
        return existing


@dataclass(frozen=True, kw_only=True)
class Build(Target):
    """Embed a wiki-18 .jsonl or DPR .tsv corpus into a LanceDB table, then build its full-text index and (from
    100k passages) an IVF-Flat vector index. Killed midway? Run the same command again: it checks what was
    committed and goes on from there."""

    embedder: str | None = None
    """sentence-transformers model (default: an existing index's own, else intfloat/e5-base-v2; the query and
    passage prefixes of e5-base/large-v2, bge-base/large-en-v1.5 and all-MiniLM-L6-v2 are built in)"""
    device: str | None = None
    """cpu, cuda, cuda:1, or several comma-separated (cuda:0,cuda:1: one encoder process per GPU); default: best
    available"""
    batch_size: int = 128
    """passages per embedding forward pass"""
    workers: int | None = None
    """processes tokenising passages ahead of each encoder (default on GPUs: 8 each, fewer if the node's cores
    per GPU minus 2 are fewer; on a CPU 0: the encoder wants every core)"""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_at_least_one(self, "batch_size")

    def run(self) -> None:
        from research.retrieval.build import build_index
        from research.retrieval.corpus import count_lines, read_corpus

        ivf_device = self.ivf_torch_device(self.device)
        existing = self.check(self.embedder)
        name = self.embedder or existing or DEFAULT_EMBEDDER
        embedder = Embedder(name, device=self.device, batch_size=self.batch_size, workers=self.workers)
        index = build_index(
            self.index, read_corpus(self.corpus), embedder=embedder, batch_size=self.commit_every,
            total=count_lines(self.corpus), overwrite=self.overwrite, ivf_device=ivf_device,
        )  # fmt: skip
        print(f"{self.index}: {len(index)} passages, embedder {embedder.spec.name} (dim {embedder.dim})")


@dataclass(frozen=True, kw_only=True)
class Import(Target):
    """Write the corpus's passages with the vectors of a FAISS IndexFlatIP (e.g. Search-R1's e5_Flat.index over
    wiki-18), streamed in corpus order, then build the full-text and vector indexes. Queries are embedded with
    --embedder, which must be the model the vectors came from."""

    faiss: str
    """the FAISS flat index file (IndexFlatIP or IndexFlatL2)"""
    embedder: str
    """the sentence-transformers model the vectors came from"""
    commit_every: int = 65536

    def run(self) -> None:
        from research.retrieval.faiss_flat import import_flat

        ivf_device = self.ivf_torch_device()
        self.check(self.embedder)  # an existing index built with another embedder is refused here
        embedder = Embedder(self.embedder)
        index = import_flat(
            self.index, self.faiss, self.corpus, embedder=embedder, batch_size=self.commit_every,
            overwrite=self.overwrite, ivf_device=ivf_device,
        )  # fmt: skip
        print(f"{self.index}: {len(index)} passages, vectors of {embedder.spec.name} from {self.faiss}")


@dataclass(frozen=True, kw_only=True)
class Lookup(IndexArgs):
    """Print the top passages for queries."""

    queries: list[str]
    search_top_k: int = DEFAULT_K
    """passages per query (as trained)"""
    mode: SearchMode = "vector"
    """vector (embeddings), fts (BM25) or hybrid (both, fused by reciprocal rank)"""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_at_least_one(self, "search_top_k")

    def run(self) -> None:
        found = self.open().search(self.queries, k=self.search_top_k, mode=self.mode)
        for query, hits in zip(self.queries, found, strict=True):
            print(f"# {query}")
            for rank, p in enumerate(hits, 1):
                text = p.text if len(p.text) <= 200 else p.text[:197] + "..."
                print(f"{rank:>2}. [{p.score:.4f}] {p.title} (id {p.id})\n    {text}")


@dataclass(frozen=True, kw_only=True)
class Serve(RetrieverArgs, Listen):
    """Serve POST /search and /batch_search (ReSearch), /retrieve (Search-R1) and /v1/search."""

    port: int = 8001
    search_top_k: int = DEFAULT_K
    """passages when a request does not say (Search-R1's topk)"""
    search_timeout: float = 10.0
    """seconds the index may take on a search; then 504"""

    def __post_init__(self) -> None:
        super().__post_init__()
        Listen.__post_init__(self)  # not reached through RetrieverArgs
        check_at_least_one(self, "search_top_k")

    def run(self) -> None:
        import uvicorn

        from research.retrieval.service import create_app

        app = create_app(self.open_retriever(), k=self.search_top_k, search_timeout=self.search_timeout)
        uvicorn.run(app, **self.uvicorn_options(), log_level="info")


COMMANDS: dict[str, tuple[type[Build | Import | Lookup | Serve], str]] = {
    "build": (Build, "embed a corpus into a LanceDB index (resumable)"),
    "import": (Import, "build the index from a FAISS flat index and its corpus, without re-embedding (resumable)"),
    "search": (Lookup, "print the top passages for queries"),
    "serve": (Serve, "serve the index over HTTP (ReSearch, Search-R1 and /v1/search APIs)"),
}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="research-index", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = p.add_subparsers(dest="command", required=True)
    for name, (command, summary) in COMMANDS.items():
        description = " ".join((command.__doc__ or summary).split())
        s = sub.add_parser(name, help=summary, description=description)
        if command is Lookup:
            s.add_argument("queries", nargs="+", help="one or more queries")
        add_fields(s, command, skip={"queries", *REMOTE}, required={"index"})  # a local index
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    show_logs()
    command, _ = COMMANDS[args.command]
    return run_command("research-index", lambda: from_args(command, args).run())


if __name__ == "__main__":
    raise SystemExit(main())
