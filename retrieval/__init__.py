"""Retrieval: the LanceDB passage index, its embedders and an async batching front."""

from research.retrieval.batching import BatchingRetriever
from research.retrieval.embedders import DEFAULT_EMBEDDER, REGISTRY, TESTBED_EMBEDDER, Embedder, EmbedderSpec
from research.retrieval.index import (
    MAX_K,
    SEARCH_MODES,
    IndexMismatchError,
    PassageIndex,
    SearchMode,
    build_index,
    connect,
    read_corpus,
    read_jsonl,
)
from research.retrieval.passage import Passage

__all__ = [
    "DEFAULT_EMBEDDER",
    "MAX_K",
    "REGISTRY",
    "SEARCH_MODES",
    "TESTBED_EMBEDDER",
    "BatchingRetriever",
    "Embedder",
    "EmbedderSpec",
    "IndexMismatchError",
    "Passage",
    "PassageIndex",
    "SearchMode",
    "build_index",
    "connect",
    "read_corpus",
    "read_jsonl",
]
