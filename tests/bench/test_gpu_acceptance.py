"""The GPU acceptance script's CPU rehearsal: every step runs, on the real components, and its table reads."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).parents[2] / "bench"


def test_the_cpu_rehearsal_runs_every_step_and_prints_one_table(tmp_path):
    done = subprocess.run(
        [sys.executable, str(BENCH / "gpu_acceptance.py"), "--device", "cpu", "--small", "--work", str(tmp_path)],
        capture_output=True, text=True, timeout=900, cwd=BENCH,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    rows = {line.split(" | ")[0].strip("| "): line for line in done.stdout.splitlines() if line.startswith("| ")}
    assert set(rows) >= {"embed", "ivf", "grpo", "serve"}, done.stdout
    for name in ("embed", "ivf", "grpo", "serve"):
        assert "FAILED" not in rows[name] and "skipped" not in rows[name], f"{rows[name]}\n{done.stderr[-3000:]}"
    assert re.search(r"pipeline [\d,]+ passages/s, encoder alone [\d,]+ \([\d.]+x\)", rows["embed"])
    assert re.search(r"embedding \d+ min", rows["embed"])
    recall = float(re.search(r"recall@10 ([\d.]+)", rows["ivf"]).group(1))
    assert recall >= 0.95, rows["ivf"]
    assert re.search(r"k-means [\d.]+ s, assignment [\d.]+ s, write [\d.]+ s", rows["ivf"])
    assert re.search(r"IVF build \d+ min", rows["ivf"])
    assert re.search(r"[\d.]+ s/step, [\d,]+ rollout tokens/s", rows["grpo"])
    ratios = re.findall(r"(\d+) clients: [\d,]+ vs [\d,]+ tokens/s \(([\d.]+)x\)", rows["serve"])
    assert [c for c, _ in ratios] == ["1", "4"] and all(float(r) > 0 for _, r in ratios), rows["serve"]
    assert not list(tmp_path.iterdir()), "the run's temporary folder is left behind"
