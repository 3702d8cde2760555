"""``research-train``: the ReSearch GRPO recipe (arXiv 2503.19470) on TRL, retrieved tokens masked.

    research-train --base qwen2.5-7b-instruct --index ./wiki18 --output runs/7b
    research-train --base qwen2.5-32b --dry-run          # config, GPU-memory plan, multi-node command
    research-train plot runs/7b                          # reward / length / searches curves (PNG)

Every hyper-parameter defaults to the paper's and has a flag (``--learning-rate``,
``--group-size``, ...) or a key in ``--config FILE`` (JSON or YAML; flags win).
Multi-GPU and multi-node: launch this same command with ``accelerate launch`` and a
shipped config (``--dry-run`` prints it). A killed run resumes from its last checkpoint
in ``--output`` when rerun with the same command.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields
from pathlib import Path
from typing import Literal, get_args, get_origin, get_type_hints

from research.train.config import ALIASES, TrainConfig, load_config, memory_plan

CONFIGS = Path(__file__).parent / "configs"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="research-train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--config", type=Path, help="JSON/YAML file of configuration keys (flags override it)")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config, GPU-memory plan, launch command")
    p.add_argument("--resume", choices=["auto", "never"], default="auto", help="resume from the last checkpoint")
    docs = {
        "base": f"model: an alias ({', '.join(ALIASES)}) or a path / HF id",
        "template": "prompt template (auto: research.json, else 'instruct' in the name)",
        "data": "'musique' (bundled MuSiQue train) or a question file",
        "index": "passage index for the rollouts' searches: folder or LanceDB URI",
        "retriever_url": "or a running research-index serve at this URL",
        "output": "run folder: checkpoints, metrics.jsonl, TensorBoard logs",
        "generation": "rollout engine: vllm (colocated), vllm-server (--vllm-server-url), transformers; "
        "auto: vllm on CUDA machines with vLLM, else transformers",
        "vllm_server_url": "a vllm serve with NCCL weight transfer (see README), e.g. http://gen-node:8000",
        "vllm_gpu_memory_utilization": "share of each GPU the colocated vLLM takes",
    }
    defaults, hints = TrainConfig(), get_type_hints(TrainConfig)
    for f in fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        default = getattr(defaults, f.name)
        choices = get_args(hints[f.name]) if get_origin(hints[f.name]) is Literal else None
        help_text = docs.get(f.name, f.name.replace("_", " ")) + f" (default: {default})"
        if isinstance(default, bool):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        else:
            kind = type(default) if default is not None else str
            p.add_argument(flag, type=kind, default=None, choices=choices or None, help=help_text)
    return p


def resolve(args: argparse.Namespace) -> TrainConfig:
    cfg = TrainConfig()
    if args.config:
        cfg = cfg.override(**load_config(args.config))
    cfg = cfg.override(**{f.name: getattr(args, f.name) for f in fields(TrainConfig)})
    cfg.validate()
    return cfg


def launch_command(cfg: TrainConfig, argv: list[str]) -> str:
    """The ``accelerate launch`` line to run on every node (ZeRO-3 config shipped with the package)."""
    passed = " ".join(a for a in argv if a != "--dry-run")
    return (
        f"accelerate launch --config_file {CONFIGS / 'zero3.yaml'} --num_machines {cfg.nodes} "
        f"--num_processes {cfg.world_size} --machine_rank $NODE_RANK --main_process_ip $MASTER_ADDR "
        f"--main_process_port 29500 -m research.train.cli {passed}"
    )


def dry_run(cfg: TrainConfig, argv: list[str]) -> None:
    print("# resolved configuration")
    print(cfg.to_json())
    print(f"\nmodel: {cfg.model_id}")
    print(
        f"batch: {cfg.prompts_per_step} prompts x {cfg.group_size} rollouts = "
        f"{cfg.prompts_per_step * cfg.group_size} per step over {cfg.world_size} GPUs "
        f"({cfg.per_device_batch} per GPU x {cfg.gradient_accumulation(cfg.world_size)} accumulation steps)"
    )
    if plan := memory_plan(cfg):
        print(f"\n# GPU-memory plan per GPU ({cfg.nodes} nodes x {cfg.gpus_per_node} GPUs, ZeRO-3)")
        for item, gib, how in plan:
            print(f"{item:<52}{gib:>8.1f} GiB   {how}")
        total = sum(g for _, g, _ in plan)
        print(f"{'total':<52}{total:>8.1f} GiB")
        if total > 80:
            print(
                "over an 80 GiB GPU: generate on separate vllm serve nodes (--generation vllm-server "
                "--vllm-server-url URL), as the paper's 32B runs need"
            )
    else:
        print("\n(no memory plan: the model's shape is known only for the paper's aliases)")
    print("\n# launch (run on every node; NODE_RANK = 0..nodes-1, MASTER_ADDR = node 0)")
    print(launch_command(cfg, argv))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["plot"]:
        from research.train.curves import plot

        if len(argv) != 2:
            print("usage: research-train plot RUN_DIR", file=sys.stderr)
            return 2
        try:
            print(plot(Path(argv[1])))
        except FileNotFoundError as exc:
            print(f"research-train: error: {exc}", file=sys.stderr)
            return 1
        return 0
    args = parser().parse_args(argv)
    try:
        cfg = resolve(args)
    except (ValueError, OSError) as exc:
        print(f"research-train: error: {exc}", file=sys.stderr)
        return 2
    if args.dry_run:
        dry_run(cfg, argv)
        return 0
    from research.train.trainer import train

    try:
        train(cfg, resume=args.resume == "auto")
    except (ValueError, FileNotFoundError) as exc:
        print(f"research-train: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
