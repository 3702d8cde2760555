"""Tiny Qwen2-architecture models with the genuine Qwen2.5 tokenizer, built on CPU.

Real checkpoints cannot run on our CI machines, so tests run the real engines on
models that are tiny but have the real architecture and tokenizer:

* :func:`scripted_model` — trained in about a minute to answer one fictional question
  by the protocol: think, search, read the result, answer with ``\\boxed{}``, EOS. Its
  search spans several tokens (``</search>`` is three), which is what the engine
  contract and search-loop tests need. Whatever result block from
  :data:`SCRIPT_CORPUS` it is shown, it answers :data:`SCRIPT_ANSWER`.
* :func:`new_qwen2` — the shared constructor (also used by the toy ReSearch model).

Checkpoints are ordinary HF checkpoints (config, safetensors, tokenizer, generation
config) that vLLM, transformers and TRL load from a path. ``head_dim`` is 64:
vLLM's CPU attention kernels need at least 32. Builds are cached under
``$RESEARCH_CACHE`` (default ``~/.cache/research``) by a hash of their recipe.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from research.protocol.tags import format_result
from research.protocol.templates import eos_token_ids, render_prompt

QWEN_TOKENIZER = Path(__file__).parent / "assets" / "qwen2.5-tokenizer"
"""The genuine Qwen2.5-Instruct tokenizer (vocab, merges, chat template); see its SOURCES.md."""

SCRIPT_QUESTION = "What is the capital of Freedonia?"
SCRIPT_QUERY = "capital of Freedonia"
SCRIPT_ANSWER = "Marxville"
SCRIPT_BEFORE = f"<think> I need the capital of Freedonia. </think> <search> {SCRIPT_QUERY} </search>"
SCRIPT_AFTER = (
    f" <think> The result names it. </think> <answer> The final answer is \\[ \\boxed{{{SCRIPT_ANSWER}}} \\] </answer>"
)


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
    build(tmp)
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


def new_qwen2(config: TinyConfig, tokenizer: Any, *, vocab_size: int | None = None) -> Any:
    """A randomly initialised tiny Qwen2 for ``tokenizer`` (both Qwen end tokens end generation)."""
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
            tie_word_embeddings=True,
            bos_token_id=None,
            eos_token_id=eos,
            dtype="float32",
        )
    )
    model.generation_config = GenerationConfig(eos_token_id=eos, pad_token_id=tokenizer.pad_token_id)
    return model


def _save(model: Any, tokenizer: Any, out: Path) -> None:
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


SCRIPT_CORPUS = [
    {
        "id": "fr-1",
        "contents": '"Freedonia"\nFreedonia is a small republic on the northern coast. Its capital is Marxville.',
    },
    {
        "id": "fr-2",
        "contents": '"Marxville"\nMarxville is the capital and largest city of Freedonia, founded by river traders.',
    },
    {
        "id": "sy-1",
        "contents": '"Sylvania"\nSylvania is a mountain kingdom bordering Freedonia. Its capital is Trentino Falls.',
    },
    {
        "id": "sy-2",
        "contents": '"Trentino Falls"\nTrentino Falls is a city known for its copper mines and winter festival.',
    },
    {
        "id": "or-1",
        "contents": '"Orchard Council"\nThe Orchard Council governs the harbor towns of the eastern valley.',
    },
    {
        "id": "la-1",
        "contents": '"Lantern Archive"\nThe Lantern Archive holds maps of every meadow and river in the region.',
    },
    {
        "id": "si-1",
        "contents": '"Signal Stone"\nThe Signal Stone is a monument raised by stonemasons in the old quarter.',
    },
    {"id": "co-1", "contents": '"Copper Harbor"\nCopper Harbor ships ore across the bay every spring and autumn.'},
]
"""Passages the scripted model reads in training and the loop tests index: fictional, so
the answer can only come from retrieval."""


def scripted_model(config: TinyConfig = TinyConfig(), *, steps: int = 300) -> Path:
    """A tiny checkpoint that answers :data:`SCRIPT_QUESTION` by the protocol (see module doc)."""

    def build(out: Path) -> None:
        import torch

        tokenizer = load_tokenizer()
        rng = random.Random(config.seed)
        eos = tokenizer.convert_tokens_to_ids("<|im_end|>")

        def encode(text: str) -> list[int]:
            return tokenizer.encode(text, add_special_tokens=False)

        prompt = encode(render_prompt(SCRIPT_QUESTION, "instruct", tokenizer))
        before, after = encode(SCRIPT_BEFORE), [*encode(SCRIPT_AFTER), eos]
        examples = []
        for _ in range(48):  # varied result blocks: the answer must not depend on them
            shown = rng.sample(SCRIPT_CORPUS, rng.randint(1, 5))
            result = encode(format_result([p["contents"] for p in shown]))
            ids = prompt + before + result + after
            labels = [-100] * len(prompt) + before + [-100] * len(result) + after  # result tokens: mask 0
            examples.append((ids, labels))
        # Train with a vocabulary of only the tokens the script uses, then widen the
        # embedding to the full 151k vocabulary with zero rows: every other token then
        # scores exactly 0 at inference. Seconds instead of minutes on two cores.
        used = torch.tensor(sorted({t for ids, _ in examples for t in ids}))
        small = new_qwen2(config, tokenizer, vocab_size=len(used))
        width = max(len(ids) for ids, _ in examples)

        def remap(seqs: list[list[int]], pad: int) -> torch.Tensor:
            rows = [seq + [pad] * (width - len(seq)) for seq in seqs]
            return torch.tensor([[int(torch.searchsorted(used, t)) if t >= 0 else t for t in r] for r in rows])

        input_ids = remap([ids for ids, _ in examples], eos)
        labels = remap([lab for _, lab in examples], -100)
        attention = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in examples])
        optimizer = torch.optim.AdamW(small.parameters(), lr=3e-3, weight_decay=0.0)
        small.train()
        for _ in range(steps):
            batch = torch.tensor(rng.sample(range(len(examples)), 8))
            small(input_ids=input_ids[batch], attention_mask=attention[batch], labels=labels[batch]).loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        model = new_qwen2(config, tokenizer)
        state = small.state_dict()
        full = torch.zeros_like(model.get_input_embeddings().weight)
        full[used] = state.pop("model.embed_tokens.weight")
        state = {k: v for k, v in state.items() if k != "lm_head.weight"}  # tied to the embedding
        model.load_state_dict({**state, "model.embed_tokens.weight": full}, strict=False)
        model.tie_weights()
        _save(model, tokenizer, out)

    return cached("scripted-qwen2", {"config": asdict(config), "steps": steps, "v": 3}, build)


VLLM_CPU_ARGS: dict[str, Any] = {"dtype": "float32", "gpu_memory_utilization": 0.1, "enforce_eager": True}
"""vLLM engine arguments for test-bed checkpoints on a CPU-only machine (``vllm serve`` takes the same)."""


def open_engine(kind: str, model: str | Path, *, max_model_len: int = 4096) -> Any:
    """A ``"vllm"`` (CPU build) or ``"transformers"`` engine on a test-bed checkpoint.

    vLLM gets the settings it needs on a CPU-only machine: float32 weights, eager
    mode, a 1 GiB KV cache (``VLLM_CPU_KVCACHE_SPACE``) and a small memory share.
    """
    if kind == "vllm":
        from research.engines.vllm_engine import VLLMEngine

        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        return VLLMEngine.from_pretrained(str(model), max_model_len=max_model_len, **VLLM_CPU_ARGS)
    if kind == "transformers":
        from research.engines.hf import TransformersEngine

        return TransformersEngine.from_pretrained(str(model))
    raise ValueError(f"unknown engine {kind!r}; choose vllm or transformers")
