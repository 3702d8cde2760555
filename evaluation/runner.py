"""Resumable, concurrent evaluation runs and their reports.

A run folder holds::

    config.json                     what was run (a resumed run must match it)
    traces/DATASET/METHOD.jsonl     one line per finished question: prediction, trace, scores
    judge_cache.jsonl               judge verdicts (when a judge is set)
    summary.json  table.md  chart.png

Each finished question is appended (one write, flushed) to its traces file, so a
killed run loses at most the questions in flight; a restart skips every id already
there, drops a line the kill cut short, and runs only the rest. ``summary.json`` is
computed from the traces in dataset order, so an interrupted-then-resumed run and an
uninterrupted one write the same summary.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from research.evaluation.judge import Judge
from research.evaluation.methods import Method, Setup
from research.protocol import cover_exact_match, exact_match, f1_score
from research.questions import Example

SUMMARY_METRICS = ("em", "f1", "cover_em", "lj", "searches", "response_tokens", "well_formed")


@dataclass(frozen=True, slots=True)
class Task:
    """One (dataset, method) cell of the table."""

    dataset: str
    method: str
    examples: Sequence[Example]


def read_traces(path: Path) -> dict[str, dict[str, Any]]:
    """Finished questions by id; a last line cut short by a kill is removed from the file."""
    if not path.is_file():
        return {}
    rows, good = {}, 0
    with path.open("rb") as f:
        for line in f:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                break
            if not line.endswith(b"\n"):
                break
            rows[row["id"]] = row
            good += len(line)
    if good != path.stat().st_size:
        with path.open("rb+") as f:
            f.truncate(good)
    return rows


def score(ex: Example, prediction: dict[str, Any]) -> dict[str, float]:
    answer = prediction["answer"]
    return {
        "em": exact_match(answer, ex.answers),
        "f1": f1_score(answer, ex.answers),
        "cover_em": cover_exact_match(answer, ex.answers),
    }


async def run_task(
    run_dir: Path,
    task: Task,
    method: Method,
    setup: Setup,
    *,
    judge: Judge | None = None,
    concurrency: int = 8,
) -> None:
    """Answer every question of ``task`` not yet in its traces file, appending as they finish."""
    path = run_dir / "traces" / task.dataset / f"{task.method}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    done = read_traces(path)
    todo = [ex for ex in task.examples if ex.id not in done]
    gate = asyncio.Semaphore(concurrency)
    bar = tqdm(total=len(task.examples), initial=len(task.examples) - len(todo), desc=f"{task.dataset}/{task.method}")

    async def one(ex: Example, out: Any) -> None:
        async with gate:
            pred = asdict(await method(setup, ex))
            row = {"id": ex.id, "question": ex.question, "golds": list(ex.answers), **pred, **score(ex, pred)}
            row["searches"] = len(pred["queries"])
            row["lj"] = await judge(ex.question, ex.answers, pred["answer"]) if judge else None
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
            out.flush()
            bar.update()

    try:
        with path.open("a", encoding="utf-8") as out:
            await asyncio.gather(*(one(ex, out) for ex in todo))
    finally:
        bar.close()


def summarize(run_dir: Path, tasks: Sequence[Task]) -> dict[str, dict[str, dict[str, Any]]]:
    """Means per dataset and method, over the questions of each task in dataset order."""
    summary: dict[str, dict[str, dict[str, Any]]] = {}
    for task in tasks:
        rows = read_traces(run_dir / "traces" / task.dataset / f"{task.method}.jsonl")
        ordered = [rows[ex.id] for ex in task.examples if ex.id in rows]
        cell: dict[str, Any] = {"n": len(ordered), "of": len(task.examples)}
        for key in SUMMARY_METRICS:
            values = [float(r[key]) for r in ordered if r.get(key) is not None]
            cell[key] = round(sum(values) / len(values), 4) if values else None
        cell["cut_off"] = sum(bool(r.get("cut_off")) for r in ordered)
        cell["judge_failures"] = (
            sum(r.get("lj") is None for r in ordered) if any(r.get("lj") is not None for r in ordered) else None
        )
        summary.setdefault(task.dataset, {})[task.method] = cell
    return summary


def markdown_table(summary: dict[str, dict[str, dict[str, Any]]]) -> str:
    """The paper's layout: one row per method, EM and LJ (%) per dataset."""
    datasets = list(summary)
    methods = list(dict.fromkeys(m for cells in summary.values() for m in cells))

    def pct(v: float | None) -> str:
        return "-" if v is None else f"{100 * v:.2f}"

    head = "| Method | " + " | ".join(f"{d} EM | {d} LJ" for d in datasets) + " |"
    rule = "| --- |" + " ---: | ---: |" * len(datasets)
    rows = [
        f"| {m} | "
        + " | ".join(
            f"{pct(summary[d].get(m, {}).get('em'))} | {pct(summary[d].get(m, {}).get('lj'))}" for d in datasets
        )
        + " |"
        for m in methods
    ]
    return "\n".join([head, rule, *rows]) + "\n"


def bar_chart(summary: dict[str, dict[str, dict[str, Any]]], path: Path) -> None:
    """EM per dataset, one bar per method, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = list(summary)
    methods = list(dict.fromkeys(m for cells in summary.values() for m in cells))
    width = 0.8 / max(1, len(methods))
    fig, ax = plt.subplots(figsize=(max(6, 2 * len(datasets)), 4))
    for i, m in enumerate(methods):
        values = [100 * (summary[d].get(m, {}).get("em") or 0) for d in datasets]
        ax.bar([x + i * width for x in range(len(datasets))], values, width, label=m)
    ax.set_xticks([x + width * (len(methods) - 1) / 2 for x in range(len(datasets))], datasets)
    ax.set_ylabel("EM (%)")
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_reports(run_dir: Path, tasks: Sequence[Task]) -> dict[str, dict[str, dict[str, Any]]]:
    """``summary.json``, ``table.md`` and ``chart.png`` from the traces."""
    summary = summarize(run_dir, tasks)
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    (run_dir / "table.md").write_text(markdown_table(summary))
    bar_chart(summary, run_dir / "chart.png")
    return summary


def check_config(run_dir: Path, config: dict[str, Any]) -> None:
    """Refuse to resume a run made with other settings (writes nothing: see :func:`record_config`)."""
    path = run_dir / "config.json"
    if path.is_file():
        before = json.loads(path.read_text())
        changed = sorted(k for k in before.keys() | config.keys() if before.get(k) != config.get(k))
        if changed:
            raise ValueError(
                f"{run_dir} holds a run with different settings ({', '.join(changed)}); "
                "use another --out folder to start a new run"
            )


def record_config(run_dir: Path, config: dict[str, Any]) -> None:
    """Write the run's configuration once its inputs (datasets, model, index) have loaded."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
