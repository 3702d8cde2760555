"""``research-train``'s GRPO in two processes (CPU, gloo), checked: the same parameters in both after every step.

    python bench/two_process_train.py            # the toy model, 2 steps, then resumed for a third

Launches ``accelerate launch --multi_gpu --num_processes 2`` on this file (accelerate's torchrun
launcher; without a GPU each process runs on the CPU, gloo between them), whose workers run
``research.train.trainer.train`` (what ``research-train`` runs) on the toy ReSearch model and
the toy world's questions, each generating its share of the rollouts through the shared search
loop, the retriever reached over HTTP (``research-index serve`` of the toy index). A callback
in each worker writes a digest of every parameter after each optimizer step; the two ranks'
digests must agree at every step (DDP reduced the gradients), and differ from the step
before (the step changed the weights). Then the run is launched again with one step more:
it resumes from its last checkpoint and takes only the new step. Prints a table per step.

On GPUs the code path is the same: ``accelerate launch --config_file train/configs/zero3.yaml``
(ZeRO-3 shards parameters, so a digest would be of each rank's shard), and ``--generation
vllm-server`` sends the rollouts to a ``trl vllm-serve`` instead of generating in-process.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from transformers import TrainerCallback


class ParameterDigest(TrainerCallback):
    """After each optimizer step, appends ``{"step", "digest"}`` of every parameter to ``digests-rank{R}.jsonl``."""

    def __init__(self, out: Path) -> None:
        self.out = out

    def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **_: Any) -> None:
        digest = hashlib.sha256()
        for name, param in sorted(model.named_parameters()):
            digest.update(name.encode() + param.detach().float().cpu().numpy().tobytes())
        with (self.out / f"digests-rank{args.process_index}.jsonl").open("a") as f:
            f.write(json.dumps({"step": state.global_step, "digest": digest.hexdigest()[:16]}) + "\n")


def worker(values: dict[str, Any]) -> None:
    from research.train.config import TrainConfig
    from research.train.trainer import train

    cfg = TrainConfig(**values)
    train(cfg, callbacks=[ParameterDigest(Path(cfg.output_dir))])


def launch(values: dict[str, Any], log: Path) -> str | None:
    """Run the workers under ``accelerate launch``; None, or the last error line when they failed."""
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               __file__, "--worker", json.dumps(values)]  # fmt: skip
    with log.open("w") as out:
        done = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"})
    errors = [line for line in log.read_text().splitlines() if "Error: " in line and "ChildFailedError" not in line]
    return (errors[-1] if errors else f"exit status {done.returncode}") if done.returncode else None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=2, help="steps of the first launch; the resumed one adds one")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(json.loads(args.worker))

    from research.testbed.processes import free_port, launched
    from research.testbed.toy_model import ToyRecipe, toy_model, world_index
    from research.testbed.world import make_world

    recipe = ToyRecipe(steps=300)  # toy_grpo's weakened model: its rewards differ within a group, so steps learn
    world = make_world(recipe.seed, chains=recipe.chains)
    index, model = world_index(world), toy_model(recipe)
    with tempfile.TemporaryDirectory(prefix="two-process-") as tmp:
        work = Path(tmp)
        data = work / "questions.jsonl"
        data.write_text("".join(json.dumps({"id": q.id, "question": q.question, "golden_answers": [q.answer]}) + "\n"
                                for q in world.questions("test")[:8]))  # fmt: skip
        port = free_port()
        serve = [sys.executable, "-m", "research.retrieval.cli", "serve", "--index", index.uri, "--port", str(port)]
        with launched(serve, f"http://127.0.0.1:{port}/health", work / "retriever.log"):
            values = dict(
                base=str(model), template="base", data=str(data), retriever=f"http://127.0.0.1:{port}/v1/search",
                output_dir=str(work / "run"), prompts_per_step=2, num_generations=2, per_device_train_batch_size=2,
                max_completion_length=256, search_top_k=recipe.top_k, temperature=1.0, learning_rate=1e-4,
                validation_size=0, save_steps=1, max_steps=args.steps, generation="transformers",
            )  # fmt: skip
            if failed := launch(values, work / "first.log"):
                raise SystemExit(f"the two-process run failed: {failed}\n{(work / 'first.log').read_text()[-3000:]}")
            resume_failed = launch({**values, "max_steps": args.steps + 1}, work / "resumed.log")
            if resume_failed is None and "resuming from" not in (work / "resumed.log").read_text():
                resume_failed = "it started over instead"
        run = work / "run"
        ranks = [
            [json.loads(line) for line in (run / f"digests-rank{r}.jsonl").read_text().splitlines()] for r in (0, 1)
        ]
        metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    print(f"\ntwo processes (gloo), {args.steps} step(s), then resumed from checkpoint-{args.steps} for one more: "
          f"{'resumed' if resume_failed is None else 'the resume FAILED: ' + resume_failed}")  # fmt: skip
    print("| step | rank 0 digest | rank 1 digest | equal | changed since the step before | reward | searches |")
    print("| ---: | --- | --- | --- | --- | ---: | ---: |")
    previous = None
    for a, b in zip(*ranks, strict=True):
        row = next((m for m in metrics if m["step"] == a["step"]), {})
        print(f"| {a['step']} | {a['digest']} | {b['digest']} | {'yes' if a == b else 'NO'} | "
              f"{'-' if previous is None else 'yes' if a['digest'] != previous else 'NO'} | "
              f"{row.get('reward', float('nan')):.2f} | {row.get('searches', float('nan')):.2f} |")  # fmt: skip
        previous = a["digest"]
    print(f"steps in metrics.jsonl: {[m['step'] for m in metrics]}")


if __name__ == "__main__":
    main()
