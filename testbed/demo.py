"""Offline demo: the real ReSearch search loop on the test bed, no network, no GPU.

It builds (once, cached: about 8 minutes on two cores) the toy ReSearch model and
a LanceDB index of the toy world embedded with all-MiniLM-L6-v2, then asks
held-out 2-hop questions (about entities the model never saw in training) through
the shared search loop with a real engine, and prints the interleaved reasoning as
it streams: model text, each search and the titles it retrieved, and the answer
against the gold one.

    python -m research.testbed.demo                      # vLLM (CPU build)
    python -m research.testbed.demo --engine transformers --questions 5
    python -m research.testbed.demo --verbose            # with vLLM's own INFO logs
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from contextlib import aclosing

from research.engines.args import open_engine, quiet_engine_logs
from research.protocol import Engine, Finished, LoopLimits, ModelText, render_prompt, stream_search_loop
from research.protocol.metrics import exact_match
from research.retrieval import BatchingRetriever
from research.testbed.acceptance import held_out
from research.testbed.models import engine_args
from research.testbed.toy_model import ToyRecipe, toy_model, world_index
from research.testbed.world import Question, make_world
from research.wire import SearchDone, SearchIssued

_COLOR = sys.stdout.isatty()
DIM, BOLD, CYAN, RESET = ("\033[2m", "\033[1m", "\033[36m", "\033[0m") if _COLOR else ("", "", "", "")


async def ask(engine: Engine, retriever: BatchingRetriever, question: Question, top_k: int) -> bool:
    """Stream one question through the search loop; whether the answer matches the gold one."""
    print(f"{BOLD}Q: {question.question}{RESET}")
    prompt_ids = engine.tokenizer.encode(render_prompt(question.question, "base"))
    events = stream_search_loop(engine, retriever, prompt_ids, limits=LoopLimits(max_tokens=1024, k=top_k))
    async with aclosing(events):
        async for event in events:
            if isinstance(event, ModelText):
                print(f"{DIM}{event.text}{RESET}", end="", flush=True)
            elif isinstance(event, SearchIssued):
                print(f"\n{CYAN}  searching: {event.query!r}{RESET}")
            elif isinstance(event, SearchDone):
                titles = ", ".join(p.title for p in event.search.results)
                print(f"{CYAN}  retrieved {len(event.search.results)} passage(s): {titles}{RESET}")
            elif isinstance(event, Finished):
                traj = event.trajectory
                correct = bool(exact_match(traj.answer or "", question.answer))
                retrieved = traj.mask.count(0)
                print(
                    f"\n{BOLD}A: {traj.answer}{RESET}  (gold: {question.answer}, {'correct' if correct else 'wrong'})"
                )
                print(
                    f"finish={traj.finish_reason} searches={len(traj.searches)} well_formed={traj.well_formed} "
                    f"tokens: model={len(traj.mask) - retrieved} retrieved={retrieved}\n"
                )
                return correct
    return False


async def demo(engine_name: str, questions: int) -> int:
    recipe = ToyRecipe()
    print("[the toy ReSearch model and the toy world's index: built the first time (about 8 minutes on two cores), "
          "then cached]", flush=True)  # fmt: skip
    model = str(toy_model(recipe))
    world = make_world(recipe.seed, chains=recipe.chains)
    index = world_index(world)
    print(f"[engine: {engine_name}, model: {model}, index: {index.uri}]", flush=True)
    engine = open_engine(model, engine_args(engine_name, max_model_len=2048))
    retriever = BatchingRetriever(index)
    print()
    try:
        correct = [await ask(engine, retriever, q, recipe.top_k) for q in held_out(world, questions)]
    finally:
        await retriever.close()
        await engine.close()
    print(f"{sum(correct)}/{len(correct)} held-out questions answered correctly")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engine", choices=["vllm", "transformers"], default="vllm", help="generation engine")
    parser.add_argument("--questions", type=int, default=3, help="held-out 2-hop questions to ask")
    parser.add_argument("--verbose", action="store_true", help="show the engine's own logs (vLLM's INFO lines)")
    args = parser.parse_args(argv)
    quiet_engine_logs(args.verbose)
    return asyncio.run(demo(args.engine, args.questions))


if __name__ == "__main__":
    raise SystemExit(main())
