"""How to open an engine: :class:`EngineArgs` (every field a CLI flag) and :func:`open_engine`.

``research-serve``, ``research-eval``, ``research-train``'s rollouts, the test bed and
the benches all open their engine here, so a flag means the same everywhere and the
CPU defaults live in one place::

    --engine vllm|transformers|upstream  --dtype  --tensor-parallel-size  ...
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from research.cli import check_at_least_one, cli_flags
from research.protocol.engine import Engine

EngineName = Literal["vllm", "transformers", "upstream"]

CPU_KV_CACHE_GIB = 4.0
"""vLLM's KV cache on a CPU-only machine when neither the flag nor ``$VLLM_CPU_KVCACHE_SPACE`` says."""


@dataclass(frozen=True, slots=True)
class EngineArgs:
    """Which engine generates and how it is set up (the model path is the caller's ``--model``)."""

    engine: EngineName = "vllm"
    """who generates: vLLM in-process, plain transformers, or a running `vllm serve` (upstream)"""
    dtype: str = "auto"
    """weights dtype (auto, bfloat16, float16, float32)"""
    tensor_parallel_size: int | None = None
    """vLLM: GPUs per model (e.g. 4 or 8 for 32B)"""
    gpu_memory_utilization: float | None = None
    """vLLM: share of GPU memory to use (vLLM's default 0.9)"""
    max_model_len: int | None = None
    """vLLM: context window (default: the model's)"""
    load_format: str | None = None
    """vLLM: how the weights load (default: vLLM's, auto; dummy: random weights in the shape of the model's
    config.json, no checkpoint needed: for benchmarks)"""
    cpu_kv_cache_gib: float | None = None
    """vLLM on a machine without CUDA: KV cache size in GiB (default: $VLLM_CPU_KVCACHE_SPACE, else 4)"""
    device: str = "cpu"
    """transformers engine: cpu, cuda, cuda:1..."""
    upstream_url: str | None = None
    """upstream engine: base URL of a `vllm serve` (it needs vLLM's return_token_ids, so vLLM only), e.g.
    http://h:8000/v1"""
    upstream_model: str | None = None
    """upstream engine: model name there (default: its first)"""
    upstream_api_key: str | None = None
    """upstream engine: its API key"""
    upstream_resumes: int = 3
    """upstream engine: times a generation whose stream broke (a replica died) is resumed from its tokens so far;
    0: fail it instead"""
    tokenizer: str | None = None
    """upstream engine: tokenizer path or id (default: --model)"""

    def __post_init__(self) -> None:
        if self.engine == "upstream" and not self.upstream_url:
            raise ValueError("--engine upstream needs --upstream-url")
        check_at_least_one(self, "tensor_parallel_size", "max_model_len")
        if self.gpu_memory_utilization is not None and not 0 < self.gpu_memory_utilization <= 1:
            raise ValueError(f"--gpu-memory-utilization must be in (0, 1], not {self.gpu_memory_utilization}")
        if self.cpu_kv_cache_gib is not None and self.cpu_kv_cache_gib <= 0:
            raise ValueError(f"--cpu-kv-cache-gib must be positive, not {self.cpu_kv_cache_gib}")
        if self.upstream_resumes < 0:
            raise ValueError(f"--upstream-resumes must be at least 0, got {self.upstream_resumes}")

    def vllm_args(self, *, cuda: bool) -> dict[str, Any]:
        """Keyword arguments for vLLM's ``AsyncEngineArgs`` / ``LLM`` (CPU: eager mode)."""
        out: dict[str, Any] = {
            "dtype": self.dtype,
            "tensor_parallel_size": self.tensor_parallel_size,
            "gpu_memory_utilization": self.gpu_memory_utilization,
            "max_model_len": self.max_model_len,
            "load_format": self.load_format,
        }
        if not cuda:
            out["enforce_eager"] = True
        return {k: v for k, v in out.items() if v is not None}

    def vllm_serve(self, model: str | Path, *, port: int, name: str, cuda: bool, host: str = "127.0.0.1") -> list[str]:
        """The command line of a plain ``vllm serve`` of ``model`` with these arguments, served as ``name``: the
        scale-out topology's replicas, the tests' upstream, the benchmarks' baseline. (On CPU its KV cache size is
        ``$VLLM_CPU_KVCACHE_SPACE`` in the process's environment.)"""
        command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model)]
        command += ["--host", host, "--port", str(port), "--served-model-name", name]
        return command + cli_flags(self.vllm_args(cuda=cuda))

    def cli_flags(self) -> list[str]:
        """These arguments as ``research-serve`` flags (those that differ from the defaults)."""
        default = EngineArgs()
        return cli_flags({n: v for n in self.__slots__ if (v := getattr(self, n)) != getattr(default, n)})


def quiet_engine_logs(verbose: bool = False) -> None:
    """Keep the engines' start-up chatter out of a command's own output, unless ``verbose``: vLLM's logs (its engine
    processes' too) at WARNING, no Hugging Face progress bars, and no library ``FutureWarning`` in the engine's
    processes. Settings already in the environment win. Call it before the engine starts (vLLM reads them when it
    is imported and when its processes spawn)."""
    if not verbose:
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("PYTHONWARNINGS", "ignore::FutureWarning")


def set_cpu_kv_cache(args: EngineArgs) -> None:
    """Size vLLM's CPU KV cache (read from the environment by its engine process when it starts)."""
    if args.cpu_kv_cache_gib is not None:
        os.environ["VLLM_CPU_KVCACHE_SPACE"] = f"{args.cpu_kv_cache_gib:g}"
    else:
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", f"{CPU_KV_CACHE_GIB:g}")


def open_engine(model: str | Path, args: EngineArgs = EngineArgs()) -> Engine:
    """The engine ``args`` ask for, on ``model`` (call inside the event loop that will use it)."""
    model = str(model)
    if args.engine == "upstream":
        from transformers import AutoTokenizer

        from research.engines.upstream import UpstreamEngine

        tokenizer = AutoTokenizer.from_pretrained(args.tokenizer or model)
        return UpstreamEngine(
            args.upstream_url,
            tokenizer,
            model=args.upstream_model,
            api_key=args.upstream_api_key,
            max_resumes=args.upstream_resumes,
        )
    if args.engine == "transformers":
        from research.engines.hf import TransformersEngine

        return TransformersEngine.from_pretrained(model, dtype=args.dtype, device=args.device)
    import torch

    from research.engines.vllm_engine import VLLMEngine

    cuda = torch.cuda.is_available()
    if not cuda:
        set_cpu_kv_cache(args)
    return VLLMEngine.from_pretrained(model, **args.vllm_args(cuda=cuda))
