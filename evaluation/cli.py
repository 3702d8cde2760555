"""``research-eval``: the paper's table (EM / LJ) for ReSearch and its baselines on one model and index.

    research-eval --model agentrl/ReSearch-Qwen-7B-Instruct --index ./wiki18 \\
        --dataset hotpotqa=data/hotpotqa_dev.jsonl --dataset bamboogle --out runs/7b
    research-eval --server-url http://localhost:8000/v1 --methods research --dataset musique --out runs/served

A bare dataset name uses the bundled sample (HotpotQA 500, 2Wiki 164, MuSiQue 200
dev questions, all 125 of Bamboogle); ``NAME=PATH`` reads any file of the shapes in
:mod:`research.questions`. Runs resume: rerun the same command after a kill.
With ``--judge-url`` (or ``OPENAI_API_KEY`` for OpenAI itself) LLM-as-a-Judge scores
every answer too. Results: RUN_DIR/summary.json, table.md, chart.png, traces/.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from research.cli import add_fields, check_at_least_one, from_args, run_command
from research.clients.client import AsyncClient
from research.engines.args import EngineArgs, open_engine
from research.engines.card import ModelArgs
from research.evaluation.judge import DEFAULT_JUDGE_MODEL, Judge
from research.evaluation.methods import METHODS, Method, ServedResearch, Setup
from research.evaluation.runner import Task, check_config, markdown_table, record_config, run_task, write_reports
from research.protocol import SamplingOptions, get_protocol
from research.questions import DATASETS, Example, bundled, load_examples
from research.retrieval import RetrieverArgs


@dataclass(frozen=True, kw_only=True)
class EvalConfig(ModelArgs, RetrieverArgs):
    """What ``research-eval`` runs; every field is a flag (``--model``, ``--index``: the in-process methods')."""

    out: Path
    """run folder (rerun with the same one to resume)"""
    dataset: list[str]
    """hotpotqa | 2wikimultihopqa | musique | bamboogle (bundled samples), NAME=PATH or PATH; repeat for several"""
    methods: tuple[str, ...] = tuple(METHODS)
    """comma-separated, of: research, naive-generation, naive-rag, iter-retgen, ircot (default: all)"""
    limit: int | None = None
    """evaluate a random sample of this many questions per dataset"""
    seed: int = 0
    """sampling seed for --limit (and the engine's)"""
    concurrency: int = 16
    """questions in flight at once"""
    search_top_k: int | None = None
    """passages per search (default: the protocol's: the paper's 5 for ReSearch, 3 for Search-R1)"""
    max_tokens: int = 8192
    """research: response budget, model + retrieved tokens"""
    temperature: float = 0.0
    """sampling temperature (0: greedy, as in the paper)"""
    server_url: str | None = None
    """run 'research' through a running research-serve at this URL (with or without /v1) instead"""
    server_model: str | None = None
    """model name on --server-url (default: its first)"""
    judge_url: str | None = None
    """OpenAI-compatible /v1 URL of the LLM judge (default: OpenAI when a key is set)"""
    judge_model: str = DEFAULT_JUDGE_MODEL
    """the judge's model"""
    judge_api_key: str | None = field(default=None, repr=False)
    """judge API key (default: $OPENAI_API_KEY)"""

    def __post_init__(self) -> None:
        super().__post_init__()
        if unknown := [m for m in self.methods if m not in METHODS]:
            raise ValueError(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(METHODS)}")
        if not self.methods:
            raise ValueError("--methods names no method")
        if (local := self.local_methods) and not (self.model and self.searched):
            raise ValueError(f"{', '.join(local)} need --model and --index, --retriever or --web-search (or use "
                             "--server-url for research only)")  # fmt: skip
        check_at_least_one(self, "concurrency", "search_top_k", "max_tokens")

    @property
    def local_methods(self) -> list[str]:
        """The methods that run on an in-process engine (all but a served ``research``)."""
        return [m for m in self.methods if m != "research" or not self.server_url]

    def recorded(self) -> dict[str, Any]:
        """What a resumed run must share with the run it resumes (``config.json``)."""
        return {
            "model": self.model,
            "index": self.searched,
            "server_url": self.server_url,
            "template": self.prompt_template,
            "protocol": self.search_protocol,
            "search_top_k": self.search_top_k or get_protocol(self.search_protocol).default_k,
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "limit": self.limit,
            "seed": self.seed,
            "judge_model": self.judge_model,
        }


def datasets(specs: list[str], *, limit: int | None, seed: int) -> dict[str, list[Example]]:
    out = {}
    for spec in specs:
        name, _, path = spec.partition("=")
        if path:
            out[name] = load_examples(path, limit=limit, seed=seed)
        elif name in DATASETS:
            out[name] = bundled(name, limit=limit, seed=seed)
        elif Path(name).is_file():
            out[Path(name).stem] = load_examples(name, limit=limit, seed=seed)
        else:
            raise ValueError(f"--dataset {spec}: not one of {', '.join(DATASETS)}, NAME=PATH, or a file")
    return out


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="research-eval", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_fields(p, EvalConfig)
    add_fields(p.add_argument_group("engine (in-process methods)"), EngineArgs)
    return p


async def evaluate(cfg: EvalConfig, engine_args: EngineArgs) -> dict[str, Any]:
    import openai

    sets = datasets(cfg.dataset, limit=cfg.limit, seed=cfg.seed)
    config = cfg.recorded()
    check_config(cfg.out, config)

    judge_key = cfg.judge_api_key or os.environ.get("OPENAI_API_KEY")
    judge = None
    if cfg.judge_url or judge_key:
        client = openai.AsyncOpenAI(base_url=cfg.judge_url, api_key=judge_key or "none", max_retries=0)
        judge = Judge(client, cfg.judge_model, cache=cfg.out / "judge_cache.jsonl")

    local = bool(cfg.local_methods)
    engine = open_engine(cfg.model, engine_args) if local else None
    retriever = cfg.open_retriever() if local else None
    record_config(cfg.out, config)  # only now: a start that failed to load its inputs leaves no run folder
    served: dict[str, Method] = {}
    if cfg.server_url:
        served["research"] = ServedResearch(AsyncClient(cfg.server_url, model=cfg.server_model))
    setup = Setup(
        engine,
        retriever,
        config["template"],
        SamplingOptions(temperature=cfg.temperature, seed=cfg.seed),
        max_tokens=cfg.max_tokens,
        k=config["search_top_k"],
        protocol=get_protocol(config["protocol"]),
    )
    tasks = [Task(name, method, examples) for name, examples in sets.items() for method in cfg.methods]
    try:
        for task in tasks:
            method = served.get(task.method, METHODS[task.method])
            await run_task(cfg.out, task, method, setup, judge=judge, concurrency=cfg.concurrency)
    finally:
        if engine is not None:
            await engine.close()
        if retriever is not None:
            await retriever.close()
    return write_reports(cfg.out, tasks)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)

    def command() -> None:
        cfg = from_args(EvalConfig, args)
        summary = asyncio.run(evaluate(cfg, from_args(EngineArgs, args)))
        print(markdown_table(summary))
        print(f"results in {cfg.out}/ (summary.json, table.md, chart.png, traces/)")

    return run_command("research-eval", command)


if __name__ == "__main__":
    sys.exit(main())
