"""Command-line options that choose and configure an engine, shared by every CLI.

``research-serve``, ``research-eval`` and ``research-train`` take the same flags::

    --engine vllm|transformers|upstream  --dtype  --tensor-parallel-size  ...
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from research.protocol.templates import TemplateName

ENGINES = ("vllm", "transformers", "upstream")


def add_engine_args(p: argparse.ArgumentParser) -> None:
    """The ``engine`` argument group (the model path is the caller's ``--model``)."""
    g = p.add_argument_group("engine")
    g.add_argument("--engine", choices=ENGINES, default="vllm", help="who generates (default: vLLM in-process)")
    g.add_argument("--dtype", default="auto", help="weights dtype (auto, bfloat16, float16, float32)")
    g.add_argument("--tensor-parallel-size", type=int, help="vLLM: GPUs per model (e.g. 4 or 8 for 32B)")
    g.add_argument("--gpu-memory-utilization", type=float, help="vLLM: share of GPU memory to use (default 0.9)")
    g.add_argument("--max-model-len", type=int, help="vLLM: context window (default: the model's)")
    g.add_argument("--device", default="cpu", help="transformers engine: cpu, cuda, cuda:1...")
    g.add_argument("--upstream-url", help="upstream engine: base URL of a vLLM/SGLang server, e.g. http://h:8000/v1")
    g.add_argument("--upstream-model", help="upstream engine: model name there (default: its first)")
    g.add_argument("--upstream-api-key", help="upstream engine: its API key")
    g.add_argument("--tokenizer", help="upstream engine: tokenizer path or id (default: --model)")


def open_engine(args: argparse.Namespace) -> Any:
    """The engine the flags of :func:`add_engine_args` ask for (call inside the event loop that uses it)."""
    if args.engine == "upstream":
        from transformers import AutoTokenizer

        from research.engines.upstream import UpstreamEngine

        if not args.upstream_url:
            raise SystemExit("error: --engine upstream needs --upstream-url")
        tokenizer = AutoTokenizer.from_pretrained(args.tokenizer or args.model)
        return UpstreamEngine(args.upstream_url, tokenizer, model=args.upstream_model, api_key=args.upstream_api_key)
    if args.engine == "transformers":
        from research.engines.hf import TransformersEngine

        return TransformersEngine.from_pretrained(args.model, dtype=args.dtype, device=args.device)
    import torch

    from research.engines.vllm_engine import VLLMEngine

    engine_args: dict[str, Any] = {
        "dtype": args.dtype,
        "tensor_parallel_size": args.tensor_parallel_size,
        "gpu_memory_utilization": args.gpu_memory_utilization,
        "max_model_len": args.max_model_len,
    }
    if not torch.cuda.is_available():  # vLLM's CPU build: eager mode and a bounded KV cache
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "4")
        engine_args["enforce_eager"] = True
    return VLLMEngine.from_pretrained(args.model, **{k: v for k, v in engine_args.items() if v is not None})


def default_template(model: str) -> TemplateName:
    """The template a checkpoint was trained with.

    A ``research.json`` next to the weights (written by ``research-train`` and the
    test bed) says it; otherwise names with "instruct" use the chat template and
    the rest the base template, as ReSearch's released checkpoints are named.
    """
    card = Path(model) / "research.json"
    if card.is_file():
        return json.loads(card.read_text())["template"]
    return "instruct" if "instruct" in model.lower() else "base"


def add_template_arg(p: argparse.ArgumentParser) -> None:
    """``--template auto|base|instruct`` (auto: :func:`default_template`)."""
    p.add_argument(
        "--template",
        choices=["auto", "base", "instruct"],
        default="auto",
        help="prompt template the model was trained with (auto: research.json, else 'instruct' in the name)",
    )
