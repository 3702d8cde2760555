"""The training configuration: the paper's GRPO recipe as defaults, every value overridable.

Where TRL's defaults differ from the paper, the paper wins (README "Training" lists each):
``beta`` 0.001 (TRL: 0), constant learning rate 1e-6 (TRL: linear decay), group size 5
(TRL: 8), 2 epochs, temperature 1.0, max response 8192 tokens, max prompt 512.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Literal

ALIASES = {
    "qwen2.5-7b": "Qwen/Qwen2.5-7B",
    "qwen2.5-7b-instruct": "Qwen/Qwen2.5-7B-Instruct",
    "qwen2.5-32b": "Qwen/Qwen2.5-32B",
    "qwen2.5-32b-instruct": "Qwen/Qwen2.5-32B-Instruct",
}
"""The paper's base models by short name."""


@dataclass(frozen=True, slots=True)
class Shape:
    """What the memory plan needs to know of a model."""

    params: float
    layers: int
    hidden: int
    kv_heads: int
    head_dim: int = 128
    vocab: int = 152064


SHAPES = {
    "Qwen/Qwen2.5-7B": Shape(7.62e9, 28, 3584, 4),
    "Qwen/Qwen2.5-32B": Shape(32.76e9, 64, 5120, 8),
}
SHAPES["Qwen/Qwen2.5-7B-Instruct"] = SHAPES["Qwen/Qwen2.5-7B"]
SHAPES["Qwen/Qwen2.5-32B-Instruct"] = SHAPES["Qwen/Qwen2.5-32B"]


@dataclass(frozen=True, slots=True)
class TrainConfig:
    """Everything ``research-train`` runs with; defaults are the paper's (design.md §3)."""

    base: str = "qwen2.5-7b-instruct"
    template: Literal["auto", "base", "instruct"] = "auto"
    data: str = "musique"
    index: str | None = None
    retriever_url: str | None = None
    output: str = "runs/research"
    # GRPO (paper values)
    group_size: int = 5
    learning_rate: float = 1e-6
    lr_scheduler: str = "constant"
    beta: float = 0.001
    clip: float = 0.2
    prompts_per_step: int = 256
    ppo_epochs: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    max_prompt_tokens: int = 512
    max_response_tokens: int = 8192
    epochs: float = 2.0
    top_k: int = 5
    validation_size: int = 100
    loss_type: str = "dapo"
    """TRL's token-level normalisation over the batch: verl's ``token-mean``, what the paper's verl run used."""
    # Scale and runtime
    generation: Literal["auto", "transformers", "vllm", "vllm-server"] = "auto"
    """Who generates rollouts. ``vllm``: a vLLM colocated on each training GPU; ``vllm-server``:
    a ``vllm serve`` at ``vllm_server_url`` that TRL pushes weights to (multi-node); ``transformers``:
    the policy itself (CPU). ``auto``: ``vllm-server`` when a URL is given, ``vllm`` on CUDA
    machines with vLLM installed, else ``transformers``."""
    vllm_server_url: str | None = None
    vllm_gpu_memory_utilization: float = 0.3
    """Share of each GPU the colocated vLLM may take (weights + KV cache); the rest trains.
    Each training process colocates a whole vLLM (no tensor parallelism: every process runs
    its own search loops), so models whose copy does not fit use ``vllm-server``."""
    per_device_batch: int = 1
    """Rollouts per GPU per micro-batch; gradient accumulation makes up ``prompts_per_step * group_size``."""
    max_steps: int = -1
    """Stop after this many optimizer steps (-1: run the epochs)."""
    lora_rank: int = 0
    """0: full fine-tuning; >0: LoRA adapters of this rank (peft) for small GPUs."""
    gradient_checkpointing: bool = True
    bf16: bool = True
    save_steps: int = 50
    eval_steps: int = 50
    logging_steps: int = 1
    seed: int = 42
    nodes: int = 8
    """For ``--dry-run``'s plan and launch command (a run uses the processes accelerate starts)."""
    gpus_per_node: int = 8

    @property
    def model_id(self) -> str:
        return ALIASES.get(self.base, self.base)

    @property
    def world_size(self) -> int:
        return self.nodes * self.gpus_per_node

    def generator(self, cuda: bool) -> Literal["transformers", "vllm", "vllm-server"]:
        """``generation`` with ``auto`` resolved for this machine."""
        if self.generation != "auto":
            return self.generation
        if self.vllm_server_url:
            return "vllm-server"
        return "vllm" if cuda and importlib.util.find_spec("vllm") else "transformers"

    def gradient_accumulation(self, processes: int) -> int:
        """Micro-batches per optimizer step so one step sees ``prompts_per_step`` groups."""
        rollouts = self.prompts_per_step * self.group_size
        per_pass = self.per_device_batch * processes
        if rollouts % per_pass:
            raise ValueError(
                f"prompts_per_step x group_size = {rollouts} rollouts is not a multiple of "
                f"per_device_batch x GPUs = {per_pass}"
            )
        return rollouts // per_pass

    def validate(self) -> None:
        if self.group_size < 2:
            raise ValueError("group_size must be at least 2 (GRPO compares completions within a group)")
        if self.index and self.retriever_url:
            raise ValueError("give --index or --retriever-url, not both")
        if (self.generation == "vllm-server") != bool(self.vllm_server_url) and self.generation != "auto":
            raise ValueError("--generation vllm-server and --vllm-server-url go together")
        positive = ("learning_rate", "max_prompt_tokens", "max_response_tokens", "prompts_per_step", "top_k",
                    "temperature", "epochs", "per_device_batch", "ppo_epochs", "save_steps", "eval_steps",
                    "logging_steps", "nodes", "gpus_per_node")  # fmt: skip
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("beta", "clip", "validation_size", "lora_rank"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be at least 0, got {getattr(self, name)}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if not 0 < self.vllm_gpu_memory_utilization <= 1:
            raise ValueError(f"vllm_gpu_memory_utilization must be in (0, 1], got {self.vllm_gpu_memory_utilization}")
        if self.max_steps == 0 or self.max_steps < -1:
            raise ValueError(f"max_steps must be positive, or -1 to run the epochs; got {self.max_steps}")
        if not self.base.strip():
            raise ValueError("base must name a model (an alias such as qwen2.5-7b-instruct, a hub id or a path)")

    def override(self, **values: Any) -> TrainConfig:
        """A copy with ``values`` (None means "not given") applied; unknown keys are an error."""
        known = {f.name for f in fields(self)}
        if unknown := sorted(set(values) - known):
            raise ValueError(f"unknown configuration key(s): {', '.join(unknown)}")
        return replace(self, **{k: v for k, v in values.items() if v is not None})

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


def load_config(path: str | Path) -> dict[str, Any]:
    """Keys of a ``--config`` file (JSON or YAML)."""
    import yaml

    text = Path(path).read_text()
    values = yaml.safe_load(text) or {}
    if not isinstance(values, dict):
        raise ValueError(f"{path}: a configuration file holds one mapping of keys to values")
    return {k.replace("-", "_"): v for k, v in values.items()}


def memory_plan(cfg: TrainConfig) -> list[tuple[str, float, str]]:
    """Per-GPU memory (GiB) of a ZeRO-3 run, as (item, GiB, arithmetic) rows."""
    shape = SHAPES.get(cfg.model_id)
    if shape is None:
        return []
    gib, n, p = 2**30, cfg.world_size, shape.params
    trainable = p if cfg.lora_rank == 0 else 2 * cfg.lora_rank * shape.hidden * shape.layers * 7
    seq = cfg.max_prompt_tokens + cfg.max_response_tokens
    rows = [
        ("policy weights (bf16, ZeRO-3 sharded)", 2 * p / n / gib, f"2 B x {p / 1e9:.1f}B / {n} GPUs"),
        ("gradients (bf16, sharded)", 2 * trainable / n / gib, f"2 B x {trainable / 1e9:.2f}B / {n}"),
        ("Adam + fp32 master (sharded)", 12 * trainable / n / gib, f"12 B x {trainable / 1e9:.2f}B / {n}"),
        ("reference model (bf16, sharded)", 2 * p / n / gib if cfg.beta else 0.0, f"2 B x {p / 1e9:.1f}B / {n}"),
        (
            "activations (checkpointed, 1 sequence)",
            seq * shape.hidden * shape.layers * 2 / gib * (1 if cfg.gradient_checkpointing else 16),
            f"{seq} tokens x {shape.hidden} x {shape.layers} layers x 2 B",
        ),
        (
            "logits (1 sequence, fp32)",
            seq * shape.vocab * 4 / gib,
            f"{seq} x {shape.vocab} vocab x 4 B",
        ),
    ]
    if cfg.generation in ("auto", "vllm"):
        rows.append(("colocated vLLM weights (bf16, a full copy)", 2 * p / gib, f"2 B x {p / 1e9:.1f}B"))
    kv_token = 2 * shape.layers * shape.kv_heads * shape.head_dim * 2
    rows.append(
        (
            "KV cache of one rollout at full length (bf16)",
            kv_token * seq / gib,
            f"{kv_token // 1024} KiB/token x {seq} tokens",
        )
    )
    return rows
