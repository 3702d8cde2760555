"""``research-eval``: the paper's table (EM / LJ) for ReSearch and its baselines on one model and index.

    research-eval --model agentrl/ReSearch-Qwen-7B-Instruct --index ./wiki18 \\
        --dataset hotpotqa=data/hotpotqa_dev.jsonl --dataset bamboogle --out runs/7b
    research-eval --server-url http://localhost:8000/v1 --methods research --dataset musique --out runs/served

A bare dataset name uses the bundled sample (HotpotQA 500, 2Wiki 164, MuSiQue 200
dev questions, all 125 of Bamboogle); ``NAME=PATH`` reads any file of the shapes in
:mod:`research.evaluation.datasets`. Runs resume: rerun the same command after a kill.
With ``--judge-url`` (or ``OPENAI_API_KEY`` for OpenAI itself) LLM-as-a-Judge scores
every answer too. Results: RUN_DIR/summary.json, table.md, chart.png, traces/.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path
from typing import Any

from research.clients.client import AsyncClient
from research.engines.base import SamplingOptions
from research.engines.options import add_engine_args, add_template_arg, default_template, open_engine
from research.evaluation.datasets import DATASETS, Example, bundled, load_examples
from research.evaluation.judge import DEFAULT_JUDGE_MODEL, Judge
from research.evaluation.methods import METHODS, Method, ServedResearch, Setup
from research.evaluation.runner import Task, check_config, markdown_table, record_config, run_task, write_reports


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
    p.add_argument("--out", type=Path, required=True, help="run folder (rerun with the same one to resume)")
    p.add_argument(
        "--dataset",
        action="append",
        required=True,
        help=f"{' | '.join(DATASETS)} (bundled samples), NAME=PATH or PATH; repeat for several",
    )
    p.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated, of: {', '.join(METHODS)}")
    p.add_argument("--limit", type=int, help="evaluate a random sample of this many questions per dataset")
    p.add_argument("--seed", type=int, default=0, help="sampling seed for --limit")
    p.add_argument("--concurrency", type=int, default=16, help="questions in flight at once")

    m = p.add_argument_group("model and retrieval")
    m.add_argument("--model", help="checkpoint path or Hugging Face id (in-process engine)")
    m.add_argument("--index", help="passage index: local folder or LanceDB URI")
    add_template_arg(m)
    m.add_argument("--top-k", type=int, default=5, help="passages per search (the paper's 5)")
    m.add_argument("--max-tokens", type=int, default=8192, help="research: response budget, model + retrieved")
    m.add_argument("--temperature", type=float, default=0.0, help="sampling temperature (0: greedy, as in the paper)")
    m.add_argument(
        "--server-url", help="run 'research' through a running research-serve at this URL (with or without /v1) instead"
    )
    m.add_argument("--server-model", help="model name on --server-url (default: its first)")
    add_engine_args(p)

    j = p.add_argument_group("LLM-as-a-Judge")
    j.add_argument("--judge-url", help="OpenAI-compatible /v1 URL of the judge (default: OpenAI when a key is set)")
    j.add_argument("--judge-model", default=DEFAULT_JUDGE_MODEL)
    j.add_argument("--judge-api-key", help="judge API key (default: $OPENAI_API_KEY)")
    return p


async def evaluate(args: argparse.Namespace) -> dict[str, Any]:
    import openai

    from research.retrieval import BatchingRetriever, connect

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if unknown := [m for m in methods if m not in METHODS]:
        raise ValueError(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(METHODS)}")
    local = [m for m in methods if m != "research" or not args.server_url]
    if local and not (args.model and args.index):
        raise ValueError(f"{', '.join(local)} need --model and --index (or use --server-url for research only)")
    if args.concurrency < 1:
        raise ValueError("--concurrency must be at least 1")
    sets = datasets(args.dataset, limit=args.limit, seed=args.seed)
    template = (args.template if args.template != "auto" else default_template(args.model)) if args.model else "base"
    config = {
        "model": args.model,
        "index": args.index,
        "server_url": args.server_url,
        "template": template,
        "top_k": args.top_k,
        "max_tokens": args.max_tokens,
        "temperature": args.temperature,
        "limit": args.limit,
        "seed": args.seed,
        "judge_model": args.judge_model,
    }
    check_config(args.out, config)

    judge_key = args.judge_api_key or os.environ.get("OPENAI_API_KEY")
    judge = None
    if args.judge_url or judge_key:
        client = openai.AsyncOpenAI(base_url=args.judge_url, api_key=judge_key or "none", max_retries=0)
        judge = Judge(client, args.judge_model, cache=args.out / "judge_cache.jsonl")

    engine = open_engine(args) if local else None
    retriever = BatchingRetriever(connect(args.index)) if local else None
    record_config(args.out, config)  # only now: a start that failed to load its inputs leaves no run folder
    served: dict[str, Method] = {}
    if args.server_url:
        served["research"] = ServedResearch(AsyncClient(args.server_url, model=args.server_model))
    setup = Setup(
        engine,
        retriever,
        template,
        SamplingOptions(temperature=args.temperature, seed=args.seed),
        max_tokens=args.max_tokens,
        top_k=args.top_k,
    )
    tasks = [Task(name, method, examples) for name, examples in sets.items() for method in methods]
    try:
        for task in tasks:
            method = served.get(task.method, METHODS[task.method])
            await run_task(args.out, task, method, setup, judge=judge, concurrency=args.concurrency)
    finally:
        if engine is not None:
            await engine.close()
        if retriever is not None:
            await retriever.close()
    return write_reports(args.out, tasks)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        summary = asyncio.run(evaluate(args))
    except (FileNotFoundError, ValueError) as exc:
        print(f"research-eval: error: {exc}", file=sys.stderr)
        return 2
    print(markdown_table(summary))
    print(f"results in {args.out}/ (summary.json, table.md, chart.png, traces/)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
