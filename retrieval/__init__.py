"""Retrieval: the LanceDB passage index, its embedders and an async batching front."""

from research.retrieval.batching import BatchingRetriever, ModeRetriever, SearchTimeout
from research.retrieval.cli import add_nprobes_arg
from research.retrieval.embedders import DEFAULT_EMBEDDER, REGISTRY, Embedder, EmbedderSpec, model_path
from research.retrieval.index import IndexMismatchError, PassageIndex, build_index, connect, read_corpus, read_jsonl
from research.retrieval.service import dropin_router, v1_search_router
from research.wire import MAX_K, SEARCH_MODES, Passage, SearchMode

__all__ = [
    "DEFAULT_EMBEDDER",
    "MAX_K",
    "REGISTRY",
    "SEARCH_MODES",
    "BatchingRetriever",
    "Embedder",
    "EmbedderSpec",
    "IndexMismatchError",
    "ModeRetriever",
    "Passage",
    "PassageIndex",
    "SearchMode",
    "SearchTimeout",
    "add_nprobes_arg",
    "build_index",
    "connect",
    "dropin_router",
    "model_path",
    "read_corpus",
    "read_jsonl",
    "v1_search_router",
]
