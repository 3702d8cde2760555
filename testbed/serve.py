"""``research-demo``: the toy ReSearch model behind ``research-serve``, with the playground, offline.

    research-demo                                  # vLLM (CPU build) on http://127.0.0.1:8000/
    research-demo --engine transformers --port 8001

Builds (once, cached: about 8 minutes on two cores) or reuses the toy ReSearch model and
the toy world's LanceDB index, and serves them as the model ``research`` with the base
template and one passage per search, as the model was trained. Open the printed URL for
the playground, or point any OpenAI client at ``http://HOST:PORT/v1``; the README's
client examples run against this server. The model knows nothing of the world: it
answers from what it retrieves, about entities it never saw in training.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from urllib.parse import quote

from research.engines.args import quiet_engine_logs
from research.server import cli as server_cli
from research.testbed.acceptance import held_out
from research.testbed.models import engine_args
from research.testbed.toy_model import ToyRecipe, toy_model, world_index
from research.testbed.world import make_world

MODEL_NAME = "research"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="research-demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: loopback only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--engine", choices=["vllm", "transformers"], default="vllm", help="who generates (default: vLLM)")
    p.add_argument("--api-key", help="require 'Authorization: Bearer KEY' on the API (the playground has a key field)")
    p.add_argument("--verbose", action="store_true", help="show the engine's own logs (vLLM's INFO lines)")
    return p


def toy_server(n_questions: int = 3, retriever: str | None = None) -> tuple[list[str], list[str]]:
    """``research-serve`` flags for the toy model and its world's index (built once, cached), or ``retriever``
    (a running retriever's URL) instead of the index; held-out questions."""
    recipe = ToyRecipe()
    model = toy_model(recipe)
    world = make_world(recipe.seed, chains=recipe.chains)
    searched = ["--retriever", retriever] if retriever else ["--index", world_index(world).uri]
    flags = ["--model", str(model), *searched, "--served-model-name", MODEL_NAME]
    flags += ["--template", "base", "--search-top-k", str(recipe.top_k), "--max-tokens", "1024"]
    flags += engine_args(max_model_len=2048).cli_flags()
    return flags, [q.question for q in held_out(world, n_questions)]


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    quiet_engine_logs(args.verbose)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    print("Building or loading the toy ReSearch model and the toy world's index (cached after the first run)...")
    flags, questions = toy_server()
    flags += ["--host", args.host, "--port", str(args.port), "--engine", args.engine]
    flags += ["--api-key", args.api_key] if args.api_key else []
    serve_args = server_cli.parser().parse_args(flags)
    url = f"http://{args.host}:{args.port}"

    def ready() -> None:
        print(f"\nThe playground: {url}/   (OpenAI API: {url}/v1, model {MODEL_NAME!r})")
        print("Held-out questions to ask (about entities the model never saw in training):")
        for question in questions:
            print(f"  {question}\n    {url}/?q={quote(question)}")
        print("Stop with Ctrl-C.", flush=True)

    print(f"Starting {args.engine} on {Path(flags[1]).name}; this takes about a minute on two cores...", flush=True)
    try:
        return server_cli.run(serve_args, ready=ready, prog="research-demo")
    except KeyboardInterrupt:  # Ctrl-C while the model loads, before the server handles signals
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
