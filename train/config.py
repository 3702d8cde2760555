"""The training configuration: TRL's ``GRPOConfig`` with the paper's recipe as defaults, plus ReSearch's fields.

Every TRL field keeps its name, flag and help (``--num-generations``, ``--beta``, ...);
where TRL's default differs from the paper, the paper wins (README "Training" lists each):
``beta`` 0.001 (TRL: 0), a constant learning rate (TRL: linear decay), 5 generations per
question (TRL: 8), 2 epochs (TRL: 3), responses of 8192 tokens (TRL: 512). ReSearch adds
what TRL has no field for: the base model, template, questions, retriever, passages per
search, prompts per step, the generation set-up and the cluster shape for ``--dry-run``.
``research-train`` parses it with TRL's ``TrlParser`` (``--config FILE.yaml``, flags win).
"""

from __future__ import annotations

import importlib.util
import inspect
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Literal

from trl import GRPOConfig

from research.cli import mutable_twin, twin_values
from research.retrieval import RetrieverArgs

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


def _paper(name: str, value: Any) -> Any:
    """TRL's field ``name`` with the paper's default (its help says TRL's)."""
    trl = GRPOConfig.__dataclass_fields__[name]
    trl_default = trl.default_factory() if callable(trl.default_factory) else trl.default
    help_text = f"{trl.metadata.get('help', '')} ReSearch: the paper's {value} (TRL's default: {trl_default})."
    return field(default=value, metadata={**trl.metadata, "help": help_text.strip()})


def _ours(default: Any, help_text: str) -> Any:
    return field(default=default, metadata={"help": help_text})


RetrieverFields = mutable_twin(RetrieverArgs)
"""research-serve's and research-eval's retriever flags (``--index``, ``--retriever``, ``--web-search``, ...), declared
once in :class:`RetrieverArgs`."""


DERIVED = ("gradient_accumulation_steps", "use_cpu", "bf16", "gradient_checkpointing", "eval_strategy",
           "per_device_eval_batch_size", "use_vllm", "vllm_mode", "vllm_max_model_length")  # fmt: skip
"""TRL fields :meth:`TrainConfig.__post_init__` sets from ReSearch's fields and the machine."""


@dataclass
class TrainConfig(RetrieverFields, GRPOConfig):
    """Everything ``research-train`` runs with; defaults are the paper's (design.md §3)."""

    # -- ReSearch's fields ---------------------------------------------------------------------
    base: str = _ours("qwen2.5-7b-instruct", f"model: an alias ({', '.join(ALIASES)}) or a path / HF id")
    template: Literal["auto", "base", "instruct"] = _ours(
        "auto", "prompt template (auto: the checkpoint's research.json, else 'instruct' in the name)"
    )
    protocol: Literal["auto", "research", "search-r1", "recall"] = _ours(
        "auto", "search protocol (auto: the checkpoint's research.json, else its name: SearchR1-*, ReCall-*, ReSearch)"
    )
    data: str = _ours("musique", "'musique' (the bundled MuSiQue train questions) or a question file")
    search_top_k: int | None = _ours(None, "passages per search (default: the protocol's; the paper's 5 for ReSearch)")
    max_prompt_tokens: int = _ours(512, "questions whose prompt is longer are left out (the paper's 512)")
    prompts_per_step: int = _ours(
        256, "questions per optimizer step (the paper's 256); sets gradient_accumulation_steps for the processes"
    )
    validation_size: int = _ours(100, "random MuSiQue dev questions evaluated every eval_steps (0: none)")
    lora_rank: int = _ours(0, "0: full fine-tuning; >0: LoRA adapters of this rank (peft) for small GPUs")
    generation: Literal["auto", "transformers", "vllm", "vllm-server"] = _ours(
        "auto",
        "who generates rollouts (sets use_vllm, vllm_mode): vllm, a vLLM colocated on each training GPU; "
        "vllm-server, a vllm serve at vllm_server_base_url that TRL pushes weights to (multi-node); "
        "transformers, the policy itself (CPU); auto: vllm-server when a URL is given, vllm on CUDA "
        "machines with vLLM installed, else transformers",
    )
    nodes: int = _ours(8, "for --dry-run's plan and launch command (a run uses the processes accelerate starts)")
    gpus_per_node: int = _ours(8, "for --dry-run's plan and launch command")

    # -- TRL's fields with the paper's defaults -------------------------------------------------
    output_dir: str | None = _paper("output_dir", "runs/research")
    lr_scheduler_type: str = _paper("lr_scheduler_type", "constant")
    beta: float = _paper("beta", 0.001)
    num_generations: int | None = _paper("num_generations", 5)
    num_train_epochs: float = _paper("num_train_epochs", 2.0)
    max_completion_length: int | None = _paper("max_completion_length", 8192)
    per_device_train_batch_size: int = _paper("per_device_train_batch_size", 1)
    logging_steps: float = _paper("logging_steps", 1)
    save_steps: float = _paper("save_steps", 50)
    eval_steps: float | None = _paper("eval_steps", 50)
    bf16: bool | None = _paper("bf16", True)

    def __post_init__(self) -> None:
        import torch
        from accelerate import PartialState

        self._check()
        cuda = torch.cuda.is_available()
        self.planned_checkpointing = self.gradient_checkpointing
        """What ``--dry-run``'s GPU plan assumes (a CPU run turns checkpointing off)."""
        if not cuda:  # CPU runs (tests, the toy world): no bf16 autocast, no checkpointing
            self.use_cpu, self.bf16, self.gradient_checkpointing = True, False, False
        self.gradient_accumulation_steps = self.gradient_accumulation(PartialState().num_processes)
        if self.validation_size:
            self.per_device_eval_batch_size = self.num_generations
            if self.eval_strategy == "no":
                self.eval_strategy = "steps"
        generator = self.generator(cuda)
        self.use_vllm = generator != "transformers"
        self.vllm_mode = "server" if generator == "vllm-server" else "colocate"
        self.vllm_max_model_length = self.vllm_max_model_length or self.max_prompt_tokens + self.max_completion_length
        super().__post_init__()

    def retriever_args(self) -> RetrieverArgs:
        """Where the rollouts' searches go (:meth:`RetrieverArgs.open_retriever` opens it)."""
        return twin_values(RetrieverArgs, self)

    def _check(self) -> None:
        """ReSearch's checks, each naming its field, before TRL's own."""
        if (self.num_generations or 0) < 2:
            raise ValueError("num_generations must be at least 2 (GRPO compares completions within a group)")
        self.retriever_args()  # one of --index, --retriever and --web-search
        if (self.generation == "vllm-server") != bool(self.vllm_server_base_url) and self.generation != "auto":
            raise ValueError("--generation vllm-server and --vllm-server-base-url go together")
        positive = ("learning_rate", "max_prompt_tokens", "max_completion_length", "prompts_per_step",
                    "temperature", "num_train_epochs", "per_device_train_batch_size", "num_iterations", "save_steps",
                    "logging_steps", "nodes", "gpus_per_node")  # fmt: skip
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.search_top_k is not None and self.search_top_k <= 0:
            raise ValueError(f"search_top_k must be positive, got {self.search_top_k}")
        if self.eval_steps is not None and self.eval_steps <= 0:
            raise ValueError(f"eval_steps must be positive, got {self.eval_steps}")
        for name in ("beta", "epsilon", "validation_size", "lora_rank"):
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

    @property
    def model_id(self) -> str:
        return ALIASES.get(self.base, self.base)

    @property
    def cluster_size(self) -> int:
        """GPUs of the planned cluster (``nodes x gpus_per_node``), for ``--dry-run``."""
        return self.nodes * self.gpus_per_node

    def generator(self, cuda: bool) -> Literal["transformers", "vllm", "vllm-server"]:
        """``generation`` with ``auto`` resolved for this machine."""
        if self.generation != "auto":
            return self.generation
        if self.vllm_server_base_url:
            return "vllm-server"
        return "vllm" if cuda and importlib.util.find_spec("vllm") else "transformers"

    def gradient_accumulation(self, processes: int) -> int:
        """Micro-batches per optimizer step so one step sees ``prompts_per_step`` groups."""
        rollouts = self.prompts_per_step * self.num_generations
        per_pass = self.per_device_train_batch_size * processes
        if rollouts % per_pass:
            raise ValueError(
                f"prompts_per_step x num_generations = {rollouts} rollouts is not a multiple of "
                f"per_device_train_batch_size x GPUs = {per_pass}"
            )
        return rollouts // per_pass

    def changed(self) -> dict[str, Any]:
        """ReSearch's fields, the paper's defaults, and whatever else was set (flags, ``--config``)."""
        default, declared_here = TrainConfig(), inspect.get_annotations(TrainConfig)  # ReSearch's and the paper's
        shown = []
        for name, f in self.__dataclass_fields__.items():
            if (
                f.init
                and name not in DERIVED
                and (name in declared_here or getattr(self, name) != getattr(default, name))
            ):
                shown.append(name)
        values = {n: getattr(self, n) for n in shown}
        return {n: v.value if isinstance(v, Enum) else v for n, v in values.items()}


def memory_plan(cfg: TrainConfig) -> list[tuple[str, float, str]]:
    """Per-GPU memory (GiB) of a ZeRO-3 run, as (item, GiB, arithmetic) rows."""
    shape = SHAPES.get(cfg.model_id)
    if shape is None:
        return []
    gib, n, p = 2**30, cfg.cluster_size, shape.params
    trainable = p if cfg.lora_rank == 0 else 2 * cfg.lora_rank * shape.hidden * shape.layers * 7
    seq = cfg.max_prompt_tokens + cfg.max_completion_length
    rows = [
        ("policy weights (bf16, ZeRO-3 sharded)", 2 * p / n / gib, f"2 B x {p / 1e9:.1f}B / {n} GPUs"),
        ("gradients (bf16, sharded)", 2 * trainable / n / gib, f"2 B x {trainable / 1e9:.2f}B / {n}"),
        ("Adam + fp32 master (sharded)", 12 * trainable / n / gib, f"12 B x {trainable / 1e9:.2f}B / {n}"),
        ("reference model (bf16, sharded)", 2 * p / n / gib if cfg.beta else 0.0, f"2 B x {p / 1e9:.1f}B / {n}"),
        (
            "activations (checkpointed, 1 sequence)",
            seq * shape.hidden * shape.layers * 2 / gib * (1 if cfg.planned_checkpointing else 16),
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
