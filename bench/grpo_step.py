"""GRPO step time and peak GPU memory: our search-loop rollouts against TRL's own generation.

    python bench/grpo_step.py                       # Qwen2.5-0.5B-shaped, random weights, on CUDA
    python bench/grpo_step.py --shape tiny --steps 1  # a smoke run on CPU

Both runs train the same random-weight policy on the same MuSiQue prompts with the
same GRPO settings and transformers generation: ``research`` is ``research-train``'s
trainer (rollouts through the shared search loop, retrieved tokens masked), ``trl``
is TRL's ``GRPOTrainer`` generating by itself (no search, the bare question as the
prompt, the same reward read from the text). A random-weight model
never closes a ``<search>``, so no retrieval happens: the retriever URL is never
called, and the difference is the rollout engine (one sequence at a time for ours,
batched ``generate`` for TRL's). Prints seconds per step, the share spent
generating, peak GPU memory and the ratio of the two runs.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

SHAPES = {  # Qwen2.5-0.5B's config.json, and a CPU-sized one
    "qwen2.5-0.5b": {"hidden_size": 896, "layers": 24, "heads": 14, "kv_heads": 2, "intermediate_size": 4864},
    "tiny": {"hidden_size": 128, "layers": 2, "heads": 2, "kv_heads": 1, "intermediate_size": 256},
}


def random_policy(shape: str, out: Path) -> Path:
    import torch

    from research.testbed.models import TinyConfig, load_tokenizer, new_qwen2

    tokenizer = load_tokenizer()
    model = new_qwen2(TinyConfig(**SHAPES[shape], max_position=32768, rope_theta=1e6), tokenizer)
    model.to(torch.bfloat16).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def run(kind: str, args: argparse.Namespace, model: Path, work: Path) -> dict[str, float]:
    import torch

    from research.protocol import reward
    from research.train.config import TrainConfig
    from research.train.trainer import build_trainer

    cfg = TrainConfig(
        base=str(model), template="base", retriever="http://127.0.0.1:9/v1/search", output_dir=str(work / kind),
        prompts_per_step=args.prompts, num_generations=args.group,
        per_device_train_batch_size=args.prompts * args.group, max_completion_length=args.response_tokens,
        max_steps=args.steps, validation_size=0, save_steps=10**6,
        generation="transformers", gradient_checkpointing=True,
    )  # fmt: skip
    trainer, rollouts = build_trainer(cfg)
    if kind == "trl":  # TRL generates by itself, in one batch, from the bare question; same reward
        trainer.rollout_func = None
        eos = trainer.processing_class.eos_token  # TRL's decoded completions drop it: count each as ended
        trainer.reward_funcs = [
            lambda completions, answers, **_: [
                reward(c + eos, a, eos_token=eos) for c, a in zip(completions, answers, strict=True)
            ]
        ]
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    try:
        trainer.train()
    finally:
        rollouts.close()
    seconds = time.perf_counter() - start
    logs = [json.loads(line) for line in (work / kind / "metrics.jsonl").read_text().splitlines()]
    return {
        "s/step": seconds / args.steps,
        "tokens/rollout": sum(e["response_length"] for e in logs) / len(logs),
        "peak GiB": torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else float("nan"),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", choices=SHAPES, default="qwen2.5-0.5b")
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--prompts", type=int, default=2, help="prompts per step")
    p.add_argument("--group", type=int, default=4, help="rollouts per prompt")
    p.add_argument("--response-tokens", type=int, default=256)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="grpo-bench-") as tmp:
        work = Path(tmp)
        model = random_policy(args.shape, work / "policy")
        rows = {kind: run(kind, args, model, work) for kind in ("trl", "research")}
    print(
        f"\n{args.shape}, random weights, {args.prompts} prompts x {args.group} rollouts, "
        f"<= {args.response_tokens} tokens, transformers generation, {args.steps} step(s)"
    )
    print(f"{'run':<10}{'s/step':>10}{'tokens/rollout':>16}{'peak GiB':>10}{'vs trl':>9}")
    for kind, row in rows.items():
        ratio = row["s/step"] / rows["trl"]["s/step"]
        print(f"{kind:<10}{row['s/step']:>10.1f}{row['tokens/rollout']:>16.0f}{row['peak GiB']:>10.2f}{ratio:>8.2f}x")


if __name__ == "__main__":
    main()
