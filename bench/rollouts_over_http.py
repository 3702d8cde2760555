"""An RL framework's view: GRPO groups fetched from ``research-serve`` equal ``research-train``'s own rollouts.

    python bench/rollouts_over_http.py                  # 4 toy questions, groups of 8, vLLM (CPU build)
    python bench/rollouts_over_http.py --questions 8 --group 16

One vLLM engine runs the toy ReSearch model (built once, cached). For each held-out toy
question, a framework asks ``research-serve`` (in this process, on loopback, through the
``openai`` SDK) for a GRPO group: ``/v1/completions`` with the prompt as token ids, ``n`` =
the group size, a seed, ``logprobs`` and ``return_token_ids``. It computes the GRPO loss
inputs from the reply alone, never re-tokenising: the reward (the protocol's, on the
decoded ids), group-normalised advantages, and the masked per-token log-ratio of the policy
(a transformers forward pass over prompt + ``token_ids``) to the sampling log-probabilities,
inserted tokens masked out. The same is computed from ``research-train``'s in-process
rollouts (:func:`research.train.rollout.rollout_batch`) of the group with the same seed.
The table compares them token by token. Then it times, on the same server in the same run,
each question's group as one request with ``n`` = 8 against eight requests of ``n`` = 1 sent
together (the same seeds), the arms alternating over ``--repeats`` runs.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from dataclasses import dataclass, replace

import torch

from research.engines.args import open_engine, quiet_engine_logs
from research.protocol import RESEARCH, LoopLimits, SamplingOptions, Trajectory
from research.retrieval import BatchingRetriever
from research.server.app import Server, ServerConfig, create_app
from research.testbed.acceptance import held_out
from research.testbed.models import engine_args
from research.testbed.processes import start_app, stop
from research.testbed.toy_model import ToyRecipe, toy_model, world_index
from research.testbed.world import make_world
from research.train.rollout import rollout_batch


@dataclass
class Rollout:
    """What a GRPO step needs of one sample, however it was fetched."""

    token_ids: list[int]
    mask: list[int]
    """1 for the model's tokens (in the loss), 0 for the inserted ones."""
    logprobs: list[float]
    """The sampling log-probability of each model token (0 at inserted ones)."""


def from_http(choice: dict) -> Rollout:
    logprobs = [lp or 0.0 for lp in choice["token_logprobs"]]
    return Rollout(choice["token_ids"], [1 - m for m in choice["inserted_mask"]], logprobs)


def from_trainer(traj: Trajectory) -> Rollout:
    return Rollout(traj.completion_ids, traj.mask, [lp or 0.0 for lp in traj.logprobs or []])


def loss_inputs(model, tokenizer, prompt: list[int], group: list[Rollout], answer: str) -> tuple[list, list]:
    """Advantages (reward normalised over the group) and each sample's masked log-ratio (policy / sampling)."""
    rewards = [RESEARCH.reward(tokenizer.decode(r.token_ids), answer, eos_token=tokenizer.eos_token) for r in group]
    mean, std = statistics.fmean(rewards), statistics.pstdev(rewards)
    advantages = [(r - mean) / (std + 1e-4) for r in rewards]
    ratios = []
    with torch.inference_mode():
        for r in group:
            ids = torch.tensor([prompt + r.token_ids])
            logits = model(ids).logits[0, len(prompt) - 1 : -1].float()
            policy = torch.log_softmax(logits, -1).gather(1, torch.tensor(r.token_ids)[:, None])[:, 0]
            ratios.append(((policy - torch.tensor(r.logprobs)) * torch.tensor(r.mask)).tolist())
    return advantages, ratios


async def main(args: argparse.Namespace) -> None:
    from openai import AsyncOpenAI
    from transformers import AutoModelForCausalLM

    quiet_engine_logs()
    recipe = ToyRecipe()
    path = toy_model(recipe)
    world = make_world(recipe.seed, chains=recipe.chains)
    index = world_index(world)
    engine = open_engine(path, engine_args("vllm", max_model_len=2048))
    policy = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    tok = engine.tokenizer
    config = ServerConfig(model_name="toy", template="base", search_top_k=recipe.top_k, max_n=max(args.group, 8))
    uv, task, url = await start_app(create_app(Server(engine, BatchingRetriever(index), config)))
    trainer_retriever = BatchingRetriever(index)
    client = AsyncOpenAI(base_url=f"{url}/v1", api_key="none", timeout=600)
    asked = {"model": "toy", "temperature": 1.0, "max_tokens": args.max_tokens, "logprobs": 0}
    sampling = SamplingOptions(temperature=1.0, logprobs=True)
    limits = LoopLimits(max_tokens=args.max_tokens, k=recipe.top_k)
    rows = {"samples": 0, "tokens": 0, "equal tokens": 0, "equal masks": 0, "inserted tokens": 0}
    worst = {"logprob": 0.0, "advantage": 0.0, "log-ratio": 0.0}
    try:
        for i, q in enumerate(held_out(world, args.questions)):
            prompt = tok.encode(RESEARCH.render_prompt(q.question, "base"))
            seed = 1000 + i
            reply = await client.completions.create(
                prompt=prompt, n=args.group, seed=seed, extra_body={"return_token_ids": True}, **asked
            )
            http = [from_http(c.model_extra) for c in sorted(reply.choices, key=lambda c: c.index)]
            trajs = await rollout_batch(
                engine, trainer_retriever, [prompt] * args.group, limits=limits, sampling=replace(sampling, seed=seed),
                protocol=RESEARCH,
            )  # fmt: skip
            local = [from_trainer(t) for t in trajs]
            for a, b in zip(http, local, strict=True):
                rows["samples"] += 1
                rows["tokens"] += len(b.token_ids)
                rows["equal tokens"] += sum(x == y for x, y in zip(a.token_ids, b.token_ids, strict=False))
                rows["equal masks"] += a.mask == b.mask
                rows["inserted tokens"] += b.mask.count(0)
                if len(a.logprobs) == len(b.logprobs):
                    diff = max((abs(x - y) for x, y in zip(a.logprobs, b.logprobs, strict=True)), default=0.0)
                    worst["logprob"] = max(worst["logprob"], diff)
            adv_http, ratio_http = loss_inputs(policy, tok, prompt, http, q.answer)
            adv_local, ratio_local = loss_inputs(policy, tok, prompt, local, q.answer)
            worst["advantage"] = max(
                worst["advantage"], *(abs(x - y) for x, y in zip(adv_http, adv_local, strict=True))
            )
            for x, y in zip(ratio_http, ratio_local, strict=True):
                if len(x) == len(y):
                    worst["log-ratio"] = max(worst["log-ratio"], *(abs(u - v) for u, v in zip(x, y, strict=True)))

        print(
            f"\n## GRPO groups over HTTP vs research-train's rollouts ({args.questions} questions x n={args.group})\n"
        )
        print("| | value |\n| --- | --- |")
        for name, value in rows.items():
            print(f"| {name} | {value} |")
        for name, value in worst.items():
            print(f"| max abs difference, {name} | {value:.2e} |")

        prompts = [tok.encode(RESEARCH.render_prompt(q.question, "base")) for q in held_out(world, args.questions)]

        async def one_request(prompt: list[int], seed: int) -> int:
            return (await client.completions.create(prompt=prompt, n=8, seed=seed, **asked)).usage.completion_tokens

        async def eight_requests(prompt: list[int], seed: int) -> int:
            replies = await asyncio.gather(
                *(client.completions.create(prompt=prompt, n=1, seed=seed + j, **asked) for j in range(8))
            )
            return sum(r.usage.completion_tokens for r in replies)

        arms = {"1 request, n=8": one_request, "8 requests, n=1": eight_requests}
        seconds: dict[str, list[float]] = {label: [] for label in arms}
        tokens: dict[str, int] = dict.fromkeys(arms, 0)
        for repeat in range(args.repeats):  # the arms alternate, so drift on the machine hits both
            for label in arms if repeat % 2 == 0 else reversed(arms):
                started = time.perf_counter()
                for i, prompt in enumerate(prompts):  # one question's group after another, as a GRPO step's
                    tokens[label] += await arms[label](prompt, 7 + 8 * i)
                seconds[label].append(time.perf_counter() - started)
        base = statistics.median(seconds["8 requests, n=1"])
        print(f"\n## Throughput: {len(prompts)} groups of 8, {args.repeats} runs an arm, toy model on vLLM\n")
        print("| requests per group | median s (range) | model tokens a run | tokens/s | time vs 8 x n=1 |")
        print("| --- | --- | --- | --- | --- |")
        for label, times in seconds.items():
            median, per_run = statistics.median(times), tokens[label] // args.repeats
            spread = f"{min(times):.2f}-{max(times):.2f}"
            print(f"| {label} | {median:.2f} ({spread}) | {per_run} | {per_run / median:.0f} | {median / base:.2f} |")
    finally:
        await client.close()
        await trainer_retriever.close()
        await stop(uv, task)
        await engine.close()


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--questions", type=int, default=4, help="held-out toy questions, one group each")
    p.add_argument("--group", type=int, default=8, help="samples per question (GRPO's group, the request's n)")
    p.add_argument("--max-tokens", type=int, default=1024, help="response budget, model and inserted tokens")
    p.add_argument("--repeats", type=int, default=5, help="timed runs of each arm")
    asyncio.run(main(p.parse_args()))
