"""The toy table: the three-protocol toy in each protocol through research-serve, research-eval and a GRPO step.

    python -m research.testbed.toy_table --questions 50 --out runs/toy-table

For each protocol, on held-out 2-hop questions of the toy world (entities the model never
saw; their passages only in the index): exact match through a ``research-serve`` process
(``--protocol``, vLLM) asked with the ``openai`` SDK on chat completions, completions (the
protocol's prompt sent raw) and the Responses API; through ``research-eval`` (its
``research`` method); and the mean reward, well-formedness and searches of one GRPO step of
``research-train`` (TRL's trainer, the protocol's rollouts and reward, 4 questions x 4
samples). Prints a markdown table and writes it to ``OUT/table.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import openai

from research.protocol import PROTOCOL_NAMES, exact_match, get_protocol
from research.protocol.answer import last_boxed
from research.testbed.acceptance import held_out
from research.testbed.dialects import MAX_LENGTH, DialectRecipe, toy_dialect_model
from research.testbed.models import engine_args
from research.testbed.processes import free_port, launched
from research.testbed.toy_model import world_index
from research.testbed.world import Question, make_world
from research.train.config import TrainConfig
from research.train.curves import read_metrics
from research.train.trainer import train

APIS = ("chat", "completions", "responses")


def served(protocol: str, flags: list[str], questions: list[Question], log: Path) -> dict[str, float]:
    """Exact match per API of a ``research-serve`` process serving the toy in ``protocol``."""
    port = free_port()
    serve = str(Path(sys.executable).parent / "research-serve")
    args = [serve, *flags, "--protocol", protocol, "--port", str(port), "--served-model-name", "toy"]
    dialect, right = get_protocol(protocol), dict.fromkeys(APIS, 0)
    with launched(args, f"http://127.0.0.1:{port}/health", log):
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none")
        for q in questions:
            chat = client.chat.completions.create(
                model="toy", messages=[{"role": "user", "content": q.question}], temperature=0
            )
            right["chat"] += exact_match(chat.choices[0].message.model_extra["answer"] or "", q.answer)
            prompt = dialect.render_prompt(q.question, "base")
            completion = client.completions.create(model="toy", prompt=prompt, temperature=0, max_tokens=1024)
            right["completions"] += exact_match(completion.choices[0].model_extra["answer"] or "", q.answer)
            text = client.responses.create(model="toy", input=q.question, temperature=0).output_text
            right["responses"] += exact_match(last_boxed(text) or text, q.answer)
    return {api: n / len(questions) for api, n in right.items()}


def evaluated(protocol: str, flags: list[str], data: Path, n: int, out: Path) -> float:
    """Exact match of ``research-eval``'s ``research`` method in ``protocol``."""
    from research.evaluation.cli import main as eval_main

    eval_main([*flags, "--protocol", protocol, "--dataset", f"toy={data}", "--methods", "research",
               "--limit", str(n), "--out", str(out)])  # fmt: skip
    return json.loads((out / "summary.json").read_text())["toy"]["research"]["em"]


def grpo_step(protocol: str, model: Path, index: str, data: Path, out: Path) -> dict[str, float]:
    """Reward, well-formedness and searches of one GRPO step in ``protocol``."""
    train(
        TrainConfig(
            base=str(model), template="base", protocol=protocol, data=str(data), index=index, output_dir=str(out),
            prompts_per_step=4, num_generations=4, per_device_train_batch_size=4, max_steps=1, max_prompt_tokens=2048,
            max_completion_length=512, search_top_k=1, validation_size=0, generation="vllm",
        )
    )  # fmt: skip
    (row,) = read_metrics(out)
    return {key: row[key] for key in ("reward", "well_formed", "searches")}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", type=int, default=50, help="held-out 2-hop questions per protocol and API")
    parser.add_argument("--protocol", choices=[*PROTOCOL_NAMES, "all"], default="all")
    parser.add_argument("--out", type=Path, default=Path("runs/toy-table"))
    args = parser.parse_args(argv)
    recipe = DialectRecipe()
    model = toy_dialect_model(recipe)
    world = make_world(recipe.base.seed, chains=recipe.base.chains)
    index = world_index(world).uri
    questions = held_out(world, args.questions)
    args.out.mkdir(parents=True, exist_ok=True)
    data = args.out / "questions.jsonl"
    data.write_text(
        "".join(json.dumps({"id": q.id, "question": q.question, "answer": q.answer}) + "\n" for q in questions)
    )
    flags = ["--model", str(model), "--index", index, "--template", "base", "--search-top-k", "1"]
    flags += ["--max-tokens", "1024", *engine_args(max_model_len=MAX_LENGTH).cli_flags()]
    table = []
    for protocol in PROTOCOL_NAMES if args.protocol == "all" else [args.protocol]:
        em = served(protocol, flags, questions, args.out / f"serve-{protocol}.log")
        em["eval"] = evaluated(protocol, flags, data, len(questions), args.out / f"eval-{protocol}")
        step = grpo_step(protocol, model, index, data, args.out / f"grpo-{protocol}")
        table.append((protocol, em, step))
        print(table[-1], file=sys.stderr, flush=True)
    lines = [
        f"| protocol | {' | '.join(f'EM {api}' for api in (*APIS, 'eval'))} | GRPO reward | well-formed | searches |",
        "|---" * 8 + "|",
    ]
    for protocol, em, step in table:
        cells = [f"{em[api]:.2f}" for api in (*APIS, "eval")]
        cells += [f"{step['reward']:.2f}", f"{step['well_formed']:.2f}", f"{step['searches']:.2f}"]
        lines.append(f"| {protocol} | {' | '.join(cells)} |")
    text = "\n".join(lines) + f"\n\n{len(questions)} held-out 2-hop questions per cell; GRPO: one step, 4 x 4.\n"
    (args.out / "table.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
