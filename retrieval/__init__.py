"""Retrieval: the LanceDB passage index, its embedders and an async batching front.

Its public face, imported lazily: ``research.retrieval.connect`` loads LanceDB when
first asked for, so importing the package (for :data:`MAX_K`, :class:`Passage`) costs nothing.

* :mod:`~research.retrieval.corpus` reads corpora; :mod:`~research.retrieval.build` embeds one into
  an index (:mod:`~research.retrieval.ann` sizes its vector index); :mod:`~research.retrieval.index`
  opens and searches it; :mod:`~research.retrieval.batching` merges concurrent searches;
  :mod:`~research.retrieval.service` serves them over HTTP; :mod:`~research.retrieval.remote` and
  :mod:`~research.retrieval.web` search a running retriever or the web instead.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from research.wire import MAX_K, SEARCH_MODES, Passage, SearchMode

if TYPE_CHECKING:
    from research.retrieval.batching import BatchingRetriever, FetchUnsupported, ModeRetriever, SearchTimeout
    from research.retrieval.build import build_index
    from research.retrieval.cli import IndexArgs, RetrieverArgs
    from research.retrieval.corpus import read_corpus, read_jsonl
    from research.retrieval.embedders import DEFAULT_EMBEDDER, REGISTRY, Embedder, EmbedderSpec, model_path
    from research.retrieval.index import IndexMismatchError, PassageIndex, connect
    from research.retrieval.remote import RETRIEVER_APIS, RemoteIndex, RetrieverAPI, RetrieverUnavailable
    from research.retrieval.service import Searcher, dropin_router, search_error, v1_search_router
    from research.retrieval.web import WEB_PROVIDERS, WebCache, WebProvider, WebSearch

_HOME = {
    "batching": ("BatchingRetriever", "FetchUnsupported", "ModeRetriever", "SearchTimeout"),
    "build": ("build_index",),
    "cli": ("IndexArgs", "RetrieverArgs"),
    "corpus": ("read_corpus", "read_jsonl"),
    "embedders": ("DEFAULT_EMBEDDER", "REGISTRY", "Embedder", "EmbedderSpec", "model_path"),
    "index": ("IndexMismatchError", "PassageIndex", "connect"),
    "remote": ("RETRIEVER_APIS", "RemoteIndex", "RetrieverAPI", "RetrieverUnavailable"),
    "service": ("Searcher", "dropin_router", "search_error", "v1_search_router"),
    "web": ("WEB_PROVIDERS", "WebCache", "WebProvider", "WebSearch"),
}
_MODULE = {name: module for module, names in _HOME.items() for name in names}


def __getattr__(name: str) -> Any:
    if name not in _MODULE:
        raise AttributeError(f"module 'research.retrieval' has no attribute {name!r}")
    return getattr(importlib.import_module(f"research.retrieval.{_MODULE[name]}"), name)


__all__ = [
    "DEFAULT_EMBEDDER",
    "MAX_K",
    "REGISTRY",
    "RETRIEVER_APIS",
    "SEARCH_MODES",
    "WEB_PROVIDERS",
    "BatchingRetriever",
    "Embedder",
    "EmbedderSpec",
    "FetchUnsupported",
    "IndexArgs",
    "IndexMismatchError",
    "ModeRetriever",
    "Passage",
    "PassageIndex",
    "RemoteIndex",
    "RetrieverAPI",
    "RetrieverArgs",
    "RetrieverUnavailable",
    "SearchMode",
    "SearchTimeout",
    "Searcher",
    "WebCache",
    "WebProvider",
    "WebSearch",
    "build_index",
    "connect",
    "dropin_router",
    "model_path",
    "read_corpus",
    "read_jsonl",
    "search_error",
    "v1_search_router",
]
