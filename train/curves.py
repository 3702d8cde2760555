"""Per-step training metrics (jsonl next to TensorBoard) and the paper's training curves.

``RUN_DIR/metrics.jsonl`` gets one line per logged step with: mean reward, reward std,
share of well-formed responses, searches per rollout, response length (model tokens)
and KL. ``research-train plot RUN_DIR`` draws reward, response length and search
count against the step, as in the paper's figures.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from transformers import TrainerCallback
from transformers.integrations import TensorBoardCallback

METRICS = {
    "reward": "reward",
    "reward_std": "reward_std",
    "well_formed": "well_formed",
    "searches": "searches",
    "response_length": "completions/mean_length",
    "kl": "kl",
}
"""Our name -> TRL's (or our rollout's) log key."""


class StepLog(TrainerCallback):
    """Appends the step metrics to ``metrics.jsonl``; after a resume, drops lines past the checkpoint."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.path.is_file():  # resumed: keep only the steps the checkpoint holds
            rows = [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]
            kept = [r for r in rows if r["step"] <= state.global_step]
            self.path.write_text("".join(json.dumps(r) + "\n" for r in kept))

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None, **kwargs: Any) -> None:
        if not logs or "reward" not in logs or not state.is_world_process_zero:
            return
        row = {"step": state.global_step, **{name: logs.get(key) for name, key in METRICS.items()}}
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")


class TensorBoardLog(TensorBoardCallback):
    """TensorBoard in ``RUN_DIR/runs``, one run across resumes: a resume purges what was logged past its checkpoint.

    (Stock, each start writes a new timestamped run, and the steps redone after a resume show twice.)
    """

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.is_world_process_zero and self.tb_writer is None:
            from torch.utils.tensorboard import SummaryWriter

            purge = state.global_step + 1 if state.global_step else None  # resumed: steps after it are redone
            self.tb_writer = SummaryWriter(log_dir=str(Path(args.output_dir) / "runs"), purge_step=purge)
        super().on_train_begin(args, state, control, **kwargs)


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"no metrics.jsonl in {run_dir}: is it a research-train output folder?")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot(run_dir: Path, out: Path | None = None) -> Path:
    """Reward, response length and searches per rollout against the step, as one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(run_dir)
    out = out or Path(run_dir) / "curves.png"
    panels = [("reward", "mean reward"), ("response_length", "response length (tokens)"), ("searches", "searches")]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.5))
    for ax, (key, label) in zip(axes, panels, strict=True):
        points = [(r["step"], r[key]) for r in rows if r.get(key) is not None]
        ax.plot([s for s, _ in points], [v for _, v in points], marker="o", markersize=3)
        ax.set_xlabel("step")
        ax.set_title(label)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
