"""Server-side search vs the reference client-side loop: throughput and latency under load.

    python bench/serve_throughput.py                   # toy ReSearch model, toy-world index, CPU
    python bench/serve_throughput.py --model M --index I --template instruct --questions 256

Same model, same index, same questions, one run, three set-ups:

(a) ``research-serve`` (vLLM in-process): one chat request per question; the
    search loop runs on the server, continuing from token ids.
(b) the reference pattern (ReSearch's evaluation pipeline): a client-side loop
    that calls a plain ``vllm serve`` (``/v1/completions`` with the whole text,
    stop at ``</search>``) and the retriever service (``research-index serve``,
    ReSearch's ``/batch_search``), re-sending the growing text each turn.
(c) raw vLLM: the same plain ``vllm serve``, the same prompts, no search, each
    generating (``ignore_eos``) as many tokens as (a)'s mean model tokens per
    question at that concurrency: what the search loop costs in generation throughput.

Each set-up runs each concurrency ``--repeats`` times (default 3); every figure is
that of the median run, with the range of questions/s over the runs. Prints
questions/s and p50/p95 latency at each concurrency, the ratio (a)/(b),
model tokens/s of each set-up and the ratio (a)/(c), the exact match of (a) and (b)
(they should agree), the requests that failed in each (an
HTTP error or a malformed reply is counted, with its first message, and scores as a
wrong answer: the run always finishes), and the server's overhead per search (time
beyond the index's own embedding + query: p50, p95, mean), read from its /metrics.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from research.engines.args import EngineArgs
from research.protocol import exact_match, extract_answer, extract_query, format_result, render_prompt
from research.testbed.models import engine_args
from research.testbed.processes import free_port, launched

BIN = Path(sys.executable).parent
MODEL_NAME = "bench"


def vllm_serve_command(model: str, port: int, max_model_len: int) -> list[str]:
    """Plain ``vllm serve`` of ``model`` as :data:`MODEL_NAME` (the test bed's CPU settings without a GPU)."""
    cuda = _has_gpu()
    args = engine_args(max_model_len=max_model_len) if not cuda else EngineArgs(max_model_len=max_model_len)
    return args.vllm_serve(model, port=port, name=MODEL_NAME, cuda=cuda)


def research_serve_command(model: str, index: str, port: int, template: str, max_model_len: int) -> list[str]:
    """``research-serve`` of ``model`` as :data:`MODEL_NAME`, vLLM in-process, no admission limit in the way."""
    command = [str(BIN / "research-serve"), "--model", model, "--index", index, "--port", str(port)]
    command += ["--engine", "vllm", "--template", template, "--served-model-name", MODEL_NAME]
    command += ["--max-concurrent-requests", "1024", "--max-model-len", str(max_model_len)]
    return command + ([] if _has_gpu() else ["--dtype", "float32", "--gpu-memory-utilization", "0.1"])


def _has_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


KV_CACHE = {"VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "2")}
"""The same KV-cache size for both set-ups on a CPU machine."""


@dataclass
class Run:
    """One set-up at one concurrency: wall seconds, latencies, answers in order, failed requests."""

    wall: float
    latencies: list[float]
    answers: list[str]
    failures: list[str] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    """Model tokens generated per answered question (retrieved tokens excluded)."""

    @property
    def tokens_per_s(self) -> float:
        return sum(self.tokens) / self.wall


def _where(exc: Exception) -> str:
    """`` (POST URL)`` of the request an httpx error belongs to, so a failure names the server it came from."""
    try:
        return f" ({exc.request.method} {exc.request.url})" if isinstance(exc, httpx.HTTPError) else ""
    except RuntimeError:  # an error raised before any request existed
        return ""


async def run_clients(n_clients: int, questions: list[dict], ask: Callable[[dict], Awaitable[tuple[str, int]]]) -> Run:
    """``n_clients`` workers answer all questions (``ask``: answer, model tokens); a failed request is
    recorded and its answer left empty."""
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(len(questions)):
        queue.put_nowait(i)
    run = Run(0.0, [], [""] * len(questions))

    async def worker() -> None:
        while not queue.empty():
            i = queue.get_nowait()
            started = time.perf_counter()
            try:
                run.answers[i], tokens = await ask(questions[i])
                run.tokens.append(tokens)
            except (httpx.HTTPError, LookupError, TypeError, ValueError) as exc:  # transport, status, bad JSON
                run.failures.append(f"{type(exc).__name__}{_where(exc)}: {exc}"[:200])
            run.latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(n_clients)))
    run.wall = time.perf_counter() - started
    return run


def server_asker(http: httpx.AsyncClient, max_tokens: int) -> Callable[[dict], Awaitable[tuple[str, int]]]:
    """One chat request per question to research-serve at ``http``'s base URL: (answer, model tokens)."""

    async def ask(q: dict) -> tuple[str, int]:
        body = {
            "model": MODEL_NAME,
            "messages": [{"role": "user", "content": q["question"]}],
            "temperature": 0,
            "max_tokens": max_tokens,
        }
        reply = (await http.post("/v1/chat/completions", json=body)).raise_for_status().json()
        return reply["choices"][0]["message"]["answer"] or "", reply["usage"]["completion_tokens"]

    return ask


def raw_asker(
    http: httpx.AsyncClient, gen: str, template: str, tokenizer: object = None
) -> Callable[[dict, int], Awaitable[tuple[str, int]]]:
    """Plain ``vllm serve`` at ``gen`` (.../v1) on the question's prompt, exactly ``max_tokens`` generated (no
    search, ``ignore_eos``): ("", tokens)."""

    async def raw(q: dict, max_tokens: int) -> tuple[str, int]:
        body = {
            "model": MODEL_NAME,
            "prompt": render_prompt(q["question"], template, tokenizer),
            "max_tokens": max_tokens,
            "temperature": 0,
            "ignore_eos": True,
        }
        reply = (await http.post(f"{gen}/completions", json=body)).raise_for_status().json()
        return "", reply["usage"]["completion_tokens"]

    return raw


def median_run(runs: list[Run]) -> Run:
    """The run with the median wall time (the lower middle of an even count)."""
    return sorted(runs, key=lambda r: r.wall)[(len(runs) - 1) // 2]


async def warm_up(name: str, ask: Callable[[dict], Awaitable[tuple[str, int]]], questions: list[dict]) -> None:
    """One question before the timed runs; a failure is printed, not raised (the run still finishes)."""
    run = await run_clients(1, questions[:1], ask)
    if run.failures:
        print(f"{name} warm-up failed: {run.failures[0]}", file=sys.stderr)


def overhead(metrics: str) -> tuple[float, float, float, int]:
    """p50 and p95 (bucket-interpolated) and mean of research_search_overhead_seconds, and its count."""
    buckets, total, count = [], 0.0, 0
    for line in metrics.splitlines():
        if line.startswith("research_search_overhead_seconds_bucket"):
            le = line.split('le="')[1].split('"')[0]
            buckets.append((float("inf") if le == "+Inf" else float(le), float(line.split()[-1])))
        elif line.startswith("research_search_overhead_seconds_sum"):
            total = float(line.split()[-1])
        elif line.startswith("research_search_overhead_seconds_count"):
            count = int(float(line.split()[-1]))

    def quantile(q: float) -> float:
        rank, prev_le, prev_n = q * count, 0.0, 0.0
        for le, n in buckets:
            if n >= rank:
                return le if le == float("inf") else prev_le + (le - prev_le) * (rank - prev_n) / max(n - prev_n, 1e-9)
            prev_le, prev_n = le, n
        return 0.0

    return quantile(0.5), quantile(0.95), total / max(count, 1), count


def toy_defaults() -> tuple[str, str, list[dict]]:
    """The toy ReSearch model, the toy world's index and its held-out 2-hop questions."""
    from research.testbed.acceptance import held_out
    from research.testbed.toy_model import ToyRecipe, toy_model, world_index
    from research.testbed.world import make_world

    recipe = ToyRecipe()
    world = make_world(recipe.seed, chains=recipe.chains)
    index = world_index(world)
    questions = [{"question": q.question, "answer": [q.answer]} for q in held_out(world, 10_000)]
    return str(toy_model(recipe)), index.uri, questions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="checkpoint (default: the toy ReSearch model)")
    parser.add_argument("--index", help="passage index (default: the toy world's)")
    parser.add_argument("--questions-file", help="jsonl with question and answer (default: toy held-out 2-hop)")
    parser.add_argument("--template", choices=["base", "instruct"], default="base")
    parser.add_argument("--questions", type=int, default=96, help="questions per concurrency level")
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument(
        "--search-top-k", type=int, default=1, help="passages per search (the toy model was trained on 1)"
    )
    parser.add_argument("--max-tokens", type=int, default=1024)
    parser.add_argument("--max-model-len", type=int, default=2048)
    parser.add_argument("--search-workers", type=int, default=4, help="research-serve's index readers (default: 4)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each set-up at each level; medians printed")
    args = parser.parse_args()

    model, index, questions = toy_defaults()
    if args.model:
        model, index = args.model, args.index
    if args.questions_file:
        import json

        with open(args.questions_file) as f:
            questions = [json.loads(line) for line in f]
    questions = random.Random(0).sample(questions, min(args.questions, len(questions)))
    levels = [int(c) for c in args.concurrency.split(",")]
    logs = Path(os.environ.get("TMPDIR", "/tmp"))
    results: dict[str, dict[int, list[Run]]] = {"server": {}, "reference": {}, "raw": {}}

    # (a) this server
    port = free_port()
    serve = research_serve_command(model, index, port, args.template, args.max_model_len)
    serve += ["--search-top-k", str(args.search_top_k), "--search-workers", str(args.search_workers)]
    base = f"http://127.0.0.1:{port}"
    with launched(serve, f"{base}/health", logs / "bench-research-serve.log", timeout=900, env=KV_CACHE):

        async def run_server() -> str:
            async with httpx.AsyncClient(base_url=base, timeout=600, limits=httpx.Limits(max_connections=256)) as http:
                ask = server_asker(http, args.max_tokens)
                await warm_up("server", ask, questions)
                for c in levels:
                    results["server"][c] = [await run_clients(c, questions, ask) for _ in range(args.repeats)]
                return (await http.get("/metrics")).text

        metrics = asyncio.run(run_server())

    # (b) the reference pattern: plain vllm serve + the retriever service + a client-side loop
    gen_port, ret_port = free_port(), free_port()
    vllm = vllm_serve_command(model, gen_port, args.max_model_len)
    retriever = [str(BIN / "research-index"), "serve", "--index", index, "--port", str(ret_port)]
    gen, ret = f"http://127.0.0.1:{gen_port}/v1", f"http://127.0.0.1:{ret_port}"
    with (
        launched(retriever, f"{ret}/health", logs / "bench-retriever.log", timeout=900),
        launched(vllm, f"{gen.removesuffix('/v1')}/health", logs / "bench-vllm.log", timeout=900, env=KV_CACHE),
    ):

        async def run_reference() -> None:
            # vllm serve closes idle connections after 5 s, httpx's pool after 5 s: a request sent on one as the
            # server closes it fails. The reference's best client closes them first.
            limits = httpx.Limits(max_connections=256, keepalive_expiry=2)
            async with httpx.AsyncClient(timeout=600, limits=limits) as http:
                tokenizer = None
                if args.template == "instruct":
                    from transformers import AutoTokenizer

                    tokenizer = AutoTokenizer.from_pretrained(model)

                async def ask(q: dict) -> tuple[str, int]:
                    prompt = render_prompt(q["question"], args.template, tokenizer)
                    response, generated = "", 0
                    while True:
                        body = {
                            "model": MODEL_NAME,
                            "prompt": prompt + response,
                            "max_tokens": args.max_tokens,  # as the reference: a fresh budget each turn
                            "temperature": 0,
                            "stop": ["</search>"],
                            "include_stop_str_in_output": True,
                        }
                        completion = (await http.post(f"{gen}/completions", json=body)).raise_for_status().json()
                        choice = completion["choices"][0]
                        response += choice["text"]
                        generated += completion["usage"]["completion_tokens"]
                        if choice.get("stop_reason") != "</search>":
                            return extract_answer(response) or "", generated
                        query = extract_query(response) or ""
                        docs = await http.post(
                            f"{ret}/batch_search", json={"query": [query], "top_n": args.search_top_k}
                        )
                        response += format_result([d["contents"] for d in docs.raise_for_status().json()[0]])

                raw = raw_asker(http, gen, args.template, tokenizer)

                await warm_up("reference", ask, questions)
                for c in levels:
                    ours = [t for run in results["server"][c] for t in run.tokens]
                    mean = max(1, round(sum(ours) / max(len(ours), 1)))
                    results["reference"][c], results["raw"][c] = [], []
                    for _ in range(args.repeats):
                        results["reference"][c].append(await run_clients(c, questions, ask))
                        results["raw"][c].append(await run_clients(c, questions, lambda q, n=mean: raw(q, n)))

        asyncio.run(run_reference())

    print(f"\nmodel {model}\nindex {index}\n{len(questions)} questions per level, top-{args.search_top_k}")
    print(f"each figure: the median of {args.repeats} runs; q/s with its range over the runs\n")
    head = (
        f"{'clients':>8} {'setup':<10}{'q/s':>8}{'range':>12}{'p50 s':>8}{'p95 s':>8}{'EM':>7}{'failed':>8}{'tok/s':>8}"
    )
    print(f"{head}{'(a)/(b) q/s':>13}{'(a)/(c) tok/s':>15}")
    labels = {"server": "(a) ours", "reference": "(b) ref", "raw": "(c) vLLM"}
    for c in levels:
        median = {name: median_run(results[name][c]) for name in results}
        for name in ("server", "reference", "raw"):
            runs, run = results[name][c], median[name]
            em = statistics.mean(exact_match(a, q["answer"][0]) for a, q in zip(run.answers, questions, strict=True))
            em_text = "" if name == "raw" else f"{em:.3f}"
            lat = run.latencies
            p95 = statistics.quantiles(lat, n=20)[-1] if len(lat) > 1 else lat[0]
            ratio = ""
            if name == "reference":
                ratio = f"{run.wall / median['server'].wall:>13.2f}"  # (n / ours) / (n / ref)
            elif name == "raw":
                ratio = f"{'':>13}{median['server'].tokens_per_s / run.tokens_per_s:>15.2f}"
            qps = [len(questions) / r.wall for r in runs]
            spread = f"{min(qps):.2f}-{max(qps):.2f}"
            row = (
                f"{c:>8} {labels[name]:<10}{len(questions) / run.wall:>8.2f}{spread:>12}{statistics.median(lat):>8.3f}"
            )
            failed = sum(len(r.failures) for r in runs)
            print(f"{row}{p95:>8.3f}{em_text:>7}{failed:>8}{run.tokens_per_s:>8.1f}{ratio}")
    for name, levels_runs in results.items():
        for c, runs in levels_runs.items():
            failures = [f for r in runs for f in r.failures]
            if failures:
                print(f"{name} at {c} clients: {len(failures)} failed, first: {failures[0]}")
    p50, p95, mean, count = overhead(metrics)
    print(f"\nserver overhead per search (beyond embedding + index), over {count} searches:")
    print(f"p50 {p50 * 1000:.2f} ms, p95 {p95 * 1000:.2f} ms, mean {mean * 1000:.2f} ms")


if __name__ == "__main__":
    main()
