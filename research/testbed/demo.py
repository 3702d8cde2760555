"""Offline demo: the real ReSearch search loop on the test bed, no network, no GPU.

It builds (once, cached) the scripted tiny Qwen2 model and a LanceDB index of its
fictional corpus embedded with all-MiniLM-L6-v2, then runs the shared search loop
with a real engine and prints the interleaved reasoning as it streams: model
text, each search and the titles it retrieved, and the final answer.

    python -m research.testbed.demo                      # vLLM (CPU build)
    python -m research.testbed.demo --engine transformers
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from contextlib import aclosing

from research.protocol import (
    Finished,
    LoopLimits,
    ModelText,
    SearchDone,
    SearchIssued,
    render_prompt,
    stream_search_loop,
)
from research.retrieval import TESTBED_EMBEDDER, BatchingRetriever, Embedder, Passage, PassageIndex, build_index
from research.testbed.models import SCRIPT_CORPUS, SCRIPT_QUESTION, cache_root, open_engine, scripted_model

_COLOR = sys.stdout.isatty()
DIM, BOLD, CYAN, RESET = ("\033[2m", "\033[1m", "\033[36m", "\033[0m") if _COLOR else ("", "", "", "")


def demo_index() -> PassageIndex:
    """The LanceDB index of the scripted model's corpus, under the cache (built on first use)."""
    passages = [Passage(p["id"], p["contents"]) for p in SCRIPT_CORPUS]
    embedder = Embedder(TESTBED_EMBEDDER, device="cpu")
    return build_index(cache_root() / "demo-index", passages, embedder=embedder, overwrite=True)


async def demo(engine_name: str) -> int:
    model = str(scripted_model())
    index = demo_index()
    engine = open_engine(engine_name, model)
    retriever = BatchingRetriever(index)
    prompt_ids = engine.tokenizer.encode(render_prompt(SCRIPT_QUESTION, "instruct", engine.tokenizer))
    print(f"{BOLD}Q: {SCRIPT_QUESTION}{RESET}  [engine: {engine_name}, index: {index.uri}]\n")
    try:
        events = stream_search_loop(engine, retriever, prompt_ids, limits=LoopLimits(max_tokens=1024))
        async with aclosing(events):
            async for event in events:
                if isinstance(event, ModelText):
                    print(f"{DIM}{event.text}{RESET}", end="", flush=True)
                elif isinstance(event, SearchIssued):
                    print(f"\n{CYAN}  searching: {event.query!r}{RESET}")
                elif isinstance(event, SearchDone):
                    titles = ", ".join(p.title for p in event.search.passages)
                    print(f"{CYAN}  retrieved {len(event.search.passages)} passages: {titles}{RESET}")
                elif isinstance(event, Finished):
                    traj = event.trajectory
                    retrieved = traj.mask.count(0)
                    print(f"\n\n{BOLD}A: {traj.answer}{RESET}")
                    print(
                        f"finish={traj.finish_reason} searches={len(traj.searches)} well_formed={traj.well_formed} "
                        f"tokens: model={len(traj.mask) - retrieved} retrieved={retrieved}"
                    )
                    return 0 if traj.answer else 1
    finally:
        await retriever.close()
        await engine.close()
    return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engine", choices=["vllm", "transformers"], default="vllm", help="generation engine")
    args = parser.parse_args(argv)
    return asyncio.run(demo(args.engine))


if __name__ == "__main__":
    raise SystemExit(main())
