"""``research-train``: the ReSearch GRPO recipe (arXiv 2503.19470) on TRL, retrieved tokens masked.

    research-train --base qwen2.5-7b-instruct --index ./wiki18 --output-dir runs/7b
    research-train --base qwen2.5-32b --dry-run          # config, GPU-memory plan, multi-node command
    research-train plot runs/7b                          # reward / length / searches curves (PNG)

Every field of TRL's GRPOConfig is a flag under its TRL name (``--learning-rate``,
``--num-generations``, ...) or a key in ``--config FILE`` (YAML or JSON; flags win); the
defaults are the paper's where TRL's differ. ReSearch's own fields follow TRL's in ``--help``.
Multi-GPU and multi-node: launch this same command with ``accelerate launch`` and a
shipped config (``--dry-run`` prints it). A killed run resumes from its last checkpoint
in ``--output-dir`` when rerun with the same command.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from trl import TrlParser

from research.cli import add_fields, from_args, run_command, show_logs
from research.train.config import TrainConfig, memory_plan

CONFIGS = Path(__file__).parent / "configs"


def parser() -> argparse.ArgumentParser:
    """TRL's ``TrlParser`` over :class:`TrainConfig` (every GRPOConfig flag), plus the command's own flags."""
    p = TrlParser(TrainConfig, prog="research-train", description=__doc__,
                  formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    own = p.add_argument_group("research-train")
    own.add_argument("--config", type=Path, help="YAML (or JSON) file of configuration keys; flags override it")
    own.add_argument(
        "--dry-run", action="store_true", help="print the resolved config, GPU-memory plan, launch command"
    )
    own.add_argument("--resume", choices=["auto", "never"], default="auto", help="resume from the last checkpoint")
    return p


@dataclass(frozen=True, kw_only=True)
class Plot:
    """Draw a run's reward, response length and searches per rollout against the step, as in the paper's figures."""

    run_dir: Path
    out: Path | None = None
    """the PNG to write (default: RUN_DIR/curves.png)"""

    def run(self) -> None:
        from research.train.curves import plot

        print(plot(self.run_dir, self.out))


def plot_parser() -> argparse.ArgumentParser:
    """``research-train plot``'s flags, from :class:`Plot`."""
    p = argparse.ArgumentParser(prog="research-train plot", description=Plot.__doc__)
    p.add_argument("run_dir", type=Path, help="the run's --output-dir (it holds metrics.jsonl)")
    add_fields(p, Plot, skip={"run_dir"})
    return p


def launch_command(cfg: TrainConfig, argv: list[str]) -> str:
    """The ``accelerate launch`` line to run on every node (ZeRO-3 config shipped with the package)."""
    passed = " ".join(a for a in argv if a != "--dry-run")
    return (
        f"accelerate launch --config_file {CONFIGS / 'zero3.yaml'} --num_machines {cfg.nodes} "
        f"--num_processes {cfg.cluster_size} --machine_rank $NODE_RANK --main_process_ip $MASTER_ADDR "
        f"--main_process_port 29500 -m research.train.cli {passed}"
    )


def dry_run(cfg: TrainConfig, argv: list[str]) -> None:
    print("# resolved configuration: ReSearch's fields and where it differs from TRL's defaults")
    print(json.dumps(cfg.changed(), indent=2, default=str))
    print(f"\nmodel: {cfg.model_id}")
    print(
        f"batch: {cfg.prompts_per_step} prompts x {cfg.num_generations} rollouts = "
        f"{cfg.prompts_per_step * cfg.num_generations} per step over {cfg.cluster_size} GPUs "
        f"({cfg.per_device_train_batch_size} per GPU x {cfg.gradient_accumulation(cfg.cluster_size)} accumulation "
        "steps)"
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
                "--vllm-server-base-url URL), as the paper's 32B runs need"
            )
    else:
        print("\n(no memory plan: the model's shape is known only for the paper's aliases)")
    print("\n# launch (run on every node; NODE_RANK = 0..nodes-1, MASTER_ADDR = node 0)")
    print(launch_command(cfg, argv))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["plot"]:  # its own parser: TRL's parses the training run's flags
        args = plot_parser().parse_args(argv[1:])
        return run_command("research-train plot", lambda: from_args(Plot, args).run())

    show_logs()

    def command() -> None:
        cfg, args = parser().parse_args_and_config(argv)
        if args.dry_run:
            dry_run(cfg, argv)
            return
        from research.train.trainer import train

        train(cfg, resume=args.resume == "auto")

    return run_command("research-train", command)


if __name__ == "__main__":
    sys.exit(main())
