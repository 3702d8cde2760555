"""Measure the toy models on held-out questions: do they really search?

    python -m research.testbed.acceptance                  # vLLM (CPU build), 200 questions
    python -m research.testbed.acceptance --engine transformers --questions 50
    python -m research.testbed.acceptance --protocol all   # the three-protocol toy, each protocol

Three runs over the same held-out 2-hop questions (entities the model never saw
in training; their passages exist only in the index given here), each through
the real search loop and the real LanceDB retriever:

* ``research``: the true world's index;
* ``counterfactual``: an index of the same entities with rewired facts (the
  gold answers change with them) — the model can only score by reading;
* ``naive``: no retrieval (every search returns an empty result block), the
  Naive Generation baseline for a model that only knows the ReSearch format.

``--protocol`` other than the default ``research`` runs the three-protocol toy
(:mod:`research.testbed.dialects`) in that protocol; for ``recall`` a fourth run,
``client-tool``, asks held-out "Who runs the company that makes P?" questions with the
client's ``ceo_of`` tool in the prompt, and answers its calls as a client would.

Prints exact match and the share of well-formed responses for each.
"""

from __future__ import annotations

import argparse
import asyncio
import random
from collections.abc import Sequence
from dataclasses import dataclass

from research.engines.args import open_engine
from research.protocol import PROTOCOL_NAMES, Engine, LoopLimits, exact_match, get_protocol, run_search_loop
from research.protocol.loop import Retrieved, Retriever
from research.protocol.profile import Protocol
from research.protocol.protocols import RESEARCH
from research.protocol.recall import SEARCH_SCHEMA
from research.retrieval import BatchingRetriever
from research.testbed.dialects import CEO_TOOL, client_result, toy_dialect_model
from research.testbed.models import engine_args
from research.testbed.toy_model import ToyRecipe, toy_model, world_index
from research.testbed.world import Question, World, client_questions, counterfactual, make_world


class NoRetrieval:
    """The Naive Generation baseline's retriever: every search comes back empty."""

    async def search(self, queries: Sequence[str], *, k: int) -> Retrieved:
        return Retrieved([[] for _ in queries])


@dataclass(frozen=True, slots=True)
class Score:
    name: str
    exact_match: float
    well_formed: float
    searches: float
    n: int


def held_out(world: World, n: int, seed: int = 0) -> list[Question]:
    """``n`` held-out 2-hop questions (a fixed random sample)."""
    questions = [q for q in world.questions("test") if q.type == "2hop"]
    return random.Random(seed).sample(questions, min(n, len(questions)))


async def answer(
    engine: Engine, retriever: Retriever, q: Question, protocol: Protocol, *, top_k: int, client_tool: bool = False
) -> tuple[float, bool, int]:
    """Exact match, well-formedness and searches of the model's answer to ``q`` (base template, greedy).

    ``client_tool``: ``ceo_of`` is in the prompt, and its calls are answered as the server
    continues a conversation: from the turn's ids and the loop's own reply to it.
    """
    tools = [SEARCH_SCHEMA, CEO_TOOL] if client_tool else None
    prompt = engine.tokenizer.encode(protocol.render_prompt(q.question, "base", tools=tools))
    limits = LoopLimits(max_tokens=1024, k=top_k)
    names = ["ceo_of"] if client_tool else []
    traj = await run_search_loop(engine, retriever, prompt, limits=limits, protocol=protocol, client_tools=names)
    response, searches = "", len(traj.searches)
    while traj.pending is not None:
        calls = traj.pending.step.calls
        results = {i: client_result(**(calls[i].arguments or {})) for i in traj.pending.asked}
        reply = traj.pending.reply(protocol, results)
        response += traj.response + reply
        prompt = [*prompt, *traj.completion_ids, *engine.tokenizer.encode(reply, add_special_tokens=False)]
        traj = await run_search_loop(engine, retriever, prompt, limits=limits, protocol=protocol, client_tools=names)
        searches += len(traj.searches)
    response += traj.response
    return exact_match(protocol.extract_answer(response) or "", q.answer), protocol.well_formed(response), searches


async def score(
    name: str, engine: Engine, retriever: Retriever, questions: list[Question], *, top_k: int,
    protocol: Protocol = RESEARCH, client_tool: bool = False, concurrency: int = 16,
) -> Score:  # fmt: skip
    """Run the search loop on every question and score the answers."""
    gate = asyncio.Semaphore(concurrency)

    async def one(q: Question) -> tuple[float, bool, int]:
        async with gate:
            return await answer(engine, retriever, q, protocol, top_k=top_k, client_tool=client_tool)

    results = await asyncio.gather(*(one(q) for q in questions))
    n = len(results)
    return Score(
        name,
        sum(r[0] for r in results) / n,
        sum(r[1] for r in results) / n,
        sum(r[2] for r in results) / n,
        n,
    )


async def measure(engine: Engine, n: int, recipe: ToyRecipe | None = None, protocol: str = "research") -> list[Score]:
    """The three runs on ``n`` held-out questions with ``engine`` serving a toy of ``recipe`` in ``protocol``.

    ``recall`` adds the ``client-tool`` run on ``n`` held-out questions that need the client's tool.
    """
    recipe = recipe or ToyRecipe()
    dialect = get_protocol(protocol)
    world = make_world(recipe.seed, chains=recipe.chains)
    twisted = counterfactual(world)
    questions = held_out(world, n)
    by_id = {q.id: q for q in twisted.questions("test")}
    twisted_questions = [by_id[q.id] for q in questions]
    real_index = BatchingRetriever(world_index(world))
    twisted_index = BatchingRetriever(world_index(twisted))
    runs = [
        score("research", engine, real_index, questions, top_k=recipe.top_k, protocol=dialect),
        score("counterfactual", engine, twisted_index, twisted_questions, top_k=recipe.top_k, protocol=dialect),
        score("naive", engine, NoRetrieval(), questions, top_k=recipe.top_k, protocol=dialect),
    ]
    if dialect.takes_tools:
        asked = random.Random(0).sample(client_questions(world, "test"), n)
        tooled = score("client-tool", engine, real_index, asked, top_k=recipe.top_k, protocol=dialect, client_tool=True)
        runs.append(tooled)
    try:
        return list(await asyncio.gather(*runs))  # at once: the engine batches across the runs
    finally:
        await real_index.close()
        await twisted_index.close()


async def _main(engine_name: str, n: int, protocols: list[str]) -> dict[str, list[Score]]:
    model = toy_model() if protocols == ["research"] else toy_dialect_model()
    engine = open_engine(model, engine_args(engine_name, max_model_len=2048))
    try:
        return {protocol: await measure(engine, n, protocol=protocol) for protocol in protocols}
    finally:
        await engine.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engine", choices=["vllm", "transformers"], default="vllm")
    parser.add_argument("--questions", type=int, default=200, help="held-out 2-hop questions")
    parser.add_argument(
        "--protocol", choices=[*PROTOCOL_NAMES, "all"], default="research",
        help="research: the toy ReSearch model; any other: the three-protocol toy in that protocol (all: each)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    protocols = list(PROTOCOL_NAMES) if args.protocol == "all" else [args.protocol]
    results = asyncio.run(_main(args.engine, args.questions, protocols))
    print(f"\n{'protocol':<12}{'run':<16}{'EM':>8}{'well-formed':>14}{'searches':>10}{'n':>6}")
    for protocol, scores in results.items():
        for s in scores:
            print(f"{protocol:<12}{s.name:<16}{s.exact_match:>8.3f}{s.well_formed:>14.3f}{s.searches:>10.2f}{s.n:>6}")


if __name__ == "__main__":
    main()
