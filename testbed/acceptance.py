"""Measure the toy ReSearch model on held-out questions: does it really search?

    python -m research.testbed.acceptance                  # vLLM (CPU build), 200 questions
    python -m research.testbed.acceptance --engine transformers --questions 50

Three runs over the same held-out 2-hop questions (entities the model never saw
in training; their passages exist only in the index given here), each through
the real search loop and the real LanceDB retriever:

* ``research``: the true world's index;
* ``counterfactual``: an index of the same entities with rewired facts (the
  gold answers change with them) — the model can only score by reading;
* ``naive``: no retrieval (every search returns an empty result block), the
  Naive Generation baseline for a model that only knows the ReSearch format.

Prints exact match and the share of well-formed responses for each.
"""

from __future__ import annotations

import argparse
import asyncio
import random
from collections.abc import Sequence
from dataclasses import dataclass

from research.engines.args import open_engine
from research.protocol import Engine, LoopLimits, exact_match, render_prompt, run_search_loop
from research.protocol.loop import Retrieved, Retriever
from research.retrieval import BatchingRetriever
from research.testbed.models import engine_args
from research.testbed.toy_model import ToyRecipe, toy_model, world_index
from research.testbed.world import Question, World, counterfactual, make_world


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


async def score(
    name: str, engine: Engine, retriever: Retriever, questions: list[Question], *, top_k: int, concurrency: int = 16
) -> Score:
    """Run the search loop on every question and score the answers."""
    gate = asyncio.Semaphore(concurrency)

    async def one(q: Question) -> tuple[float, bool, int]:
        async with gate:
            prompt = engine.tokenizer.encode(render_prompt(q.question, "base"))
            traj = await run_search_loop(engine, retriever, prompt, limits=LoopLimits(max_tokens=1024, k=top_k))
            return exact_match(traj.answer or "", q.answer), traj.well_formed, len(traj.searches)

    results = await asyncio.gather(*(one(q) for q in questions))
    n = len(results)
    return Score(
        name,
        sum(r[0] for r in results) / n,
        sum(r[1] for r in results) / n,
        sum(r[2] for r in results) / n,
        n,
    )


async def measure(engine: Engine, n: int, recipe: ToyRecipe | None = None) -> list[Score]:
    """The three runs on ``n`` held-out questions with ``engine`` serving the toy model of ``recipe``."""
    recipe = recipe or ToyRecipe()
    world = make_world(recipe.seed, chains=recipe.chains)
    twisted = counterfactual(world)
    questions = held_out(world, n)
    by_id = {q.id: q for q in twisted.questions("test")}
    twisted_questions = [by_id[q.id] for q in questions]
    real_index = BatchingRetriever(world_index(world))
    twisted_index = BatchingRetriever(world_index(twisted))
    try:
        return list(  # at once: the engine batches across the three
            await asyncio.gather(
                score("research", engine, real_index, questions, top_k=recipe.top_k),
                score("counterfactual", engine, twisted_index, twisted_questions, top_k=recipe.top_k),
                score("naive", engine, NoRetrieval(), questions, top_k=recipe.top_k),
            )
        )
    finally:
        await real_index.close()
        await twisted_index.close()


async def _main(engine_name: str, n: int) -> list[Score]:
    engine = open_engine(toy_model(), engine_args(engine_name, max_model_len=2048))
    try:
        return await measure(engine, n)
    finally:
        await engine.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engine", choices=["vllm", "transformers"], default="vllm")
    parser.add_argument("--questions", type=int, default=200, help="held-out 2-hop questions")
    args = parser.parse_args(argv)
    scores = asyncio.run(_main(args.engine, args.questions))
    print(f"\n{'run':<16}{'EM':>8}{'well-formed':>14}{'searches':>10}{'n':>6}")
    for s in scores:
        print(f"{s.name:<16}{s.exact_match:>8.3f}{s.well_formed:>14.3f}{s.searches:>10.2f}{s.n:>6}")


if __name__ == "__main__":
    main()
