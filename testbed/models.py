"""Tiny Qwen2-architecture models with the genuine Qwen2.5 tokenizer, built on CPU.

Real checkpoints cannot run on our CI machines, so tests and the offline demo run the
real engines on models that are tiny but have the real architecture and tokenizer:
:func:`new_qwen2` is the shared constructor (the toy ReSearch model, the tests'
scripted model, the GRPO benchmark), :func:`load_tokenizer` the vendored Qwen2.5 one.

Checkpoints are ordinary HF checkpoints (config, safetensors, tokenizer, generation
config) that vLLM, transformers and TRL load from a path. ``head_dim`` is 64:
vLLM's CPU attention kernels need at least 32. Builds are cached under
``$RESEARCH_CACHE`` (default ``~/.cache/research``) by a hash of their recipe.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from research.engines.args import EngineArgs, EngineName
from research.protocol.templates import eos_token_ids

QWEN_TOKENIZER = Path(__file__).parent / "assets" / "qwen2.5-tokenizer"
"""The genuine Qwen2.5-Instruct tokenizer (vocab, merges, chat template); see its SOURCES.md."""


@dataclass(frozen=True, slots=True)
class TinyConfig:
    """Size of a tiny Qwen2 model (head_dim = hidden_size / heads must be >= 32 for vLLM)."""

    hidden_size: int = 128
    layers: int = 2
    heads: int = 2
    kv_heads: int = 1
    intermediate_size: int = 256
    max_position: int = 4096
    rope_theta: float = 10_000.0
    seed: int = 0


def cache_root() -> Path:
    return Path(os.environ.get("RESEARCH_CACHE", Path.home() / ".cache" / "research"))


def cached(kind: str, recipe: dict[str, Any], build: Callable[[Path], None]) -> Path:
    """Build into ``cache_root()/kind-HASH`` once; later calls return the finished folder."""
    digest = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]
    path = cache_root() / f"{kind}-{digest}"
    if (path / ".complete").exists():
        return path
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        build(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    (tmp / "recipe.json").write_text(json.dumps(recipe, indent=2, sort_keys=True))
    (tmp / ".complete").touch()
    try:
        tmp.rename(path)
    except OSError:  # another process finished the same build first
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def load_tokenizer(path: str | Path | None = None) -> Any:
    """A tokenizer from ``path``; by default the vendored Qwen2.5 one, converted once and cached."""
    from transformers import AutoTokenizer

    if path is None:  # converting vocab + merges takes ~10 s; the saved fast tokenizer loads at once
        path = cached(
            "qwen2.5-tokenizer",
            {"v": 1},
            lambda out: AutoTokenizer.from_pretrained(QWEN_TOKENIZER).save_pretrained(out),
        )
    return AutoTokenizer.from_pretrained(str(path))


def new_qwen2(config: TinyConfig, tokenizer: Any, *, vocab_size: int | None = None, tie: bool = True) -> Any:
    """A randomly initialised tiny Qwen2 for ``tokenizer`` (both Qwen end tokens end generation).

    ``tie``: share the input embeddings with the output matrix, as Qwen2.5's small models do.
    """
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(config.seed)
    eos = eos_token_ids(tokenizer)
    model = Qwen2ForCausalLM(
        Qwen2Config(
            vocab_size=vocab_size or (len(tokenizer) + 63) // 64 * 64,
            hidden_size=config.hidden_size,
            num_hidden_layers=config.layers,
            num_attention_heads=config.heads,
            num_key_value_heads=config.kv_heads,
            intermediate_size=config.intermediate_size,
            max_position_embeddings=config.max_position,
            rope_theta=config.rope_theta,
            tie_word_embeddings=tie,
            bos_token_id=None,
            eos_token_id=eos,
            dtype="float32",
        )
    )
    model.generation_config = GenerationConfig(eos_token_id=eos, pad_token_id=tokenizer.pad_token_id)
    return model


def engine_args(engine: EngineName = "vllm", *, max_model_len: int = 4096) -> EngineArgs:
    """How the test bed opens its checkpoints: float32 weights as saved, a 1 GiB CPU KV cache for vLLM."""
    return EngineArgs(engine=engine, dtype="float32", max_model_len=max_model_len, cpu_kv_cache_gib=1)
