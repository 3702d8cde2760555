"""One toy model that speaks all three protocols: ReSearch, Search-R1 and ReCall (with a client's tool).

    python -m research.testbed.dialects          # build (or find in the cache), about 6 minutes on two cores

The toy ReSearch model (:mod:`research.testbed.toy_model`) already copies names with
its wired circuit; this one starts from it and is trained on the same world's oracle
traces written in each protocol's dialect, through each protocol's own code (prompt,
the reply after each turn, the tool-response turns), so that its prompts and inserted
blocks are byte for byte what the server builds:

* ``research``: the ReSearch traces, as the toy was trained (so it keeps that skill);
* ``search-r1``: ``<think> ... </think>\\n<search> X </search>``, the ``<information>``
  block, ``<answer> X </answer>``;
* ``recall``: ``<tool_call>`` JSON calls of ``wikipedia_search`` ending each ChatML turn,
  ``<tool_response>`` user turns, ``\\boxed{ X}``; and, with the client's ``ceo_of`` tool in
  the prompt, "Who runs the company that makes P?": a hosted search, then a call of
  ``ceo_of`` that the client answers (:func:`client_result`), then the answer from it.

New pointer-head triggers (:func:`~research.testbed.circuit.mark_triggers`) start each
copied name: ``<search>`` and ``<answer>`` (Search-R1 writes them after a newline, so they
are not ReSearch's `` <search>``), and the opening of each JSON call up to its first
argument's value (the model writes `` Name"`` after it: arguments carry a leading space,
which the search ignores and :func:`client_result` strips; its searches ask ``"top_n": 1``,
one passage, as the ReSearch toy was trained). JSON indentation, keys and tag names of
these templates are single tokens too (:data:`TEMPLATE_TOKENS`). The vocabulary had room for
them (it is padded to a multiple of 64), so the checkpoint keeps its shape. Every dialect's
response ends with ``<|im_end|>``, the tokenizer's EOS here, as in Qwen2.5's instruct models:
ReCall's turns end with it and its reward checks it. In the new dialects the oracle states
its plan in its first thought (:func:`planned`).

Measured with ``python -m research.testbed.acceptance --protocol all`` (README, "Serving
other checkpoints"): exact match at least 0.9 in each protocol on held-out 2-hop questions,
0 without retrieval.
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from research.protocol import PROTOCOL_NAMES, get_protocol
from research.protocol.profile import Protocol
from research.protocol.recall import SEARCH_SCHEMA
from research.retrieval import Passage, PassageIndex, connect
from research.testbed.circuit import mark_triggers
from research.testbed.models import cached
from research.testbed.toy_model import Example, ToyRecipe, fit, toy_model
from research.testbed.world import Question, World, ceo_of, client_questions, make_world


def client_schemas(name: str, description: str, argument: str) -> list[dict[str, Any]]:
    """A function of one string argument as client libraries list it in ``tools``: by hand (the
    ``openai`` SDK), by langchain-openai's ``bind_tools`` of an ``@tool`` function, by
    openai-agents' ``@function_tool`` (whose ``strict`` is not listed in the prompt)."""
    typed = {"type": "string"}
    by_hand = {"type": "object", "properties": {argument: typed}, "required": [argument]}
    langchain = {"properties": {argument: typed}, "required": [argument], "type": "object"}
    agents = {
        "properties": {argument: {"title": argument.title(), **typed}},
        "required": [argument],
        "title": f"{name}_args",
        "type": "object",
        "additionalProperties": False,
    }
    return [
        {"type": "function", "function": {"name": name, "description": description, "parameters": parameters}}
        for parameters in (by_hand, langchain, agents)
    ]


CEO_TOOL_VARIANTS = client_schemas("ceo_of", "Look up who runs a company.", "company")
"""The client's own tool, as each client library writes its schema: the model is trained on all three.
No passage says who runs a company; the client's records do (:func:`client_result`)."""
CEO_TOOL = CEO_TOOL_VARIANTS[0]

SEARCH_CALL = '{"name": "wikipedia_search", "arguments": {"query": "'
CEO_CALL = '{"name": "ceo_of", "arguments": {"company": "'
TRIGGERS = ["<search>", "<answer>", SEARCH_CALL, CEO_CALL]
"""The pointer head's new triggers: a name follows each."""
TEMPLATE_TOKENS = [
    *("\n" + " " * n for n in range(4, 28, 4)),
    *('"type": ', '"function"', '"name": ', '"description": ', '"parameters": ', '"properties": ', '"required": '),
    *('"string"', '"object"', '"integer"', "function", "information", "tool_call", "tool_response"),
]
"""Pieces of ReCall's and Search-R1's templates (JSON indentation and keys, tag names) as one token each:
the toy's tokenizer was fitted to ReSearch's, and these halve ReCall's prompt (1,640 toy tokens to 774)."""
IM_END = "<|im_end|>"
MAX_LENGTH = 4096
"""The checkpoint's context: ReCall's prompt alone takes 1,200 to 1,750 of the toy's tokens."""


def extend_tokenizer(tokenizer: Any) -> Any:
    """The toy's tokenizer with the new triggers and template pieces, and ``<|im_end|>`` as its EOS."""
    from tokenizers import AddedToken

    tokenizer.add_tokens([AddedToken(t, normalized=False) for t in TRIGGERS + TEMPLATE_TOKENS])
    tokenizer.eos_token = IM_END  # ReCall's turns end with it (and its reward checks it): every dialect's do
    return tokenizer


def client_result(company: str) -> str:
    """What the client's ``ceo_of`` returns."""
    company = company.strip()
    return f"{company} is run by {ceo_of(company)}."


def planned(q: Question) -> list[str]:
    """The oracle's thoughts, the first naming every need of a two-step question.

    Each two-step question opens as a one-step one does ("I need the company that makes it."
    for "Who founded the company that makes P?" as for "Which company makes P?"), so after the
    first result the model must look back at the question to know whether it is done. The
    ReSearch toy learned that in 3,000 steps; the new dialects get a few hundred each, so their
    oracle states the plan: "I need the company that makes it. Then I need the founder of this
    company." The ReSearch traces keep the world's thoughts.
    """
    if len(q.thoughts) < 3:
        return q.thoughts
    return [f"{q.thoughts[0]} Then{q.thoughts[1].split(' Now', 1)[1]}", *q.thoughts[1:]]


def model_turns(q: Question, protocol: str) -> list[str]:
    """The oracle's turns in ``protocol``'s dialect, each with the tokens that end it (client questions: recall)."""
    if q.type == "client" and protocol != "recall":
        raise ValueError(f"the {protocol} protocol cannot call a client's tool")
    if protocol == "research":
        return [*q.turns[:-1], q.turns[-1] + IM_END]
    thoughts = planned(q)
    if protocol == "search-r1":
        acts = [f"<search> {query} </search>" for query in q.queries] + [f"<answer> {q.answer} </answer>{IM_END}"]
        return [f"<think> {thought} </think>\n{act}" for thought, act in zip(thoughts, acts, strict=True)]
    calls = [SEARCH_CALL + f' {query}", "top_n": 1}}}}' for query in q.queries]  # one passage, as the toy learned
    if q.type == "client":
        calls[-1] = CEO_CALL + f' {q.queries[-1]}"}}}}'
    acts = [f"\n<tool_call>\n{call}\n</tool_call>" for call in calls]
    acts.append(f" The answer is \\[ \\boxed{{ {q.answer}}} \\]")
    return [f" {thought} </think>{act}{IM_END}" for thought, act in zip(thoughts, acts, strict=True)]


def trace(
    q: Question, protocol: Protocol, tokenizer: Any, found: dict[str, list[Passage]], tools: Sequence[dict] | None
) -> Example:
    """``q``'s oracle trace in ``protocol``, the inserted blocks made by the protocol itself (labels -100)."""
    ids = tokenizer.encode(protocol.render_prompt(q.question, "base", tools=tools))
    labels = [-100] * len(ids)
    turns = model_turns(q, protocol.name)
    for i, turn in enumerate(turns):
        turn_ids = tokenizer.encode(turn)
        ids, labels = ids + turn_ids, labels + turn_ids
        if i == len(turns) - 1:
            break
        step = protocol.next_step(turn, "eos" if protocol.eos_in_text else "stop")
        if any(call.name for call in step.calls):  # the client's function: the client answers it
            results = [client_result(**call.arguments) if call.name else call.reply for call in step.calls]
            reply = protocol.format_tool_results([call.text for call in step.calls], results)  # type: ignore[arg-type]
        else:
            reply = protocol.reply(step, [found[call.query.strip()] for call in step.calls if call.query is not None])
        block = tokenizer.encode(reply)
        ids, labels = ids + block, labels + [-100] * len(block)
    return ids, labels


@dataclass(frozen=True, slots=True)
class DialectRecipe:
    """Everything that determines the three-protocol toy (its cache key)."""

    base: ToyRecipe = ToyRecipe()
    steps: int = 1200
    batch_size: int = 8
    lr: float = 2e-3
    version: int = 3


def training_groups(world: World, index: PassageIndex, tokenizer: Any, top_k: int) -> list[list[Example]]:
    """The traces by prompt, a group a step in turn (a group twice: twice the steps): ReSearch, Search-R1,
    ReCall with the search tool, ReCall with the client's tool too (one group per schema variant)."""
    questions = [q for q in world.questions("train") if q.type != "comparison"]
    clients = client_questions(world, "train")
    queries = sorted({query for q in questions + clients for query in q.queries})
    found = dict(zip(queries, index.search(queries, k=top_k), strict=True))
    research, search_r1, recall = (get_protocol(name) for name in PROTOCOL_NAMES)
    new_dialects = [
        [trace(q, search_r1, tokenizer, found, None) for q in questions],
        [trace(q, recall, tokenizer, found, None) for q in questions],
    ]
    rng = random.Random(0)
    with_tool = []
    for variant in CEO_TOOL_VARIANTS:  # one group per schema variant: each is a prompt of its own
        asked = clients + rng.sample(questions, len(clients) // 2)  # the tool is listed; not every question needs it
        with_tool.append([trace(q, recall, tokenizer, found, [SEARCH_SCHEMA, variant]) for q in asked])
    # ReSearch, which the toy knows, once a round; each new dialect twice; ReCall with the tool once per variant
    return [[trace(q, research, tokenizer, found, None) for q in questions], *new_dialects, *new_dialects, *with_tool]


def toy_dialect_model(recipe: DialectRecipe = DialectRecipe()) -> Path:
    """Path of the three-protocol toy checkpoint for ``recipe``, built on first use."""

    def build(out: Path) -> None:
        import torch
        from transformers import AutoTokenizer, Qwen2ForCausalLM

        started = time.monotonic()
        start = toy_model(recipe.base)
        tokenizer = extend_tokenizer(AutoTokenizer.from_pretrained(start))
        model = Qwen2ForCausalLM.from_pretrained(start, dtype=torch.float32)
        if len(tokenizer) > model.config.vocab_size:
            raise ValueError(f"the toy's vocabulary ({model.config.vocab_size}) has no room for {TRIGGERS}")
        torch.manual_seed(recipe.base.seed)
        mark_triggers(model, tokenizer.convert_tokens_to_ids(TRIGGERS))
        world = make_world(recipe.base.seed, chains=recipe.base.chains)
        index = connect(start / "train-index")  # the toy's own: the world's train passages
        groups = training_groups(world, index, tokenizer, recipe.base.top_k)
        fit(
            model, groups, steps=recipe.steps, batch_size=recipe.batch_size, lr=recipe.lr, seed=recipe.base.seed,
            pad=tokenizer.pad_token_id, desc="training the three-protocol toy",
        )  # fmt: skip
        model.config.max_position_embeddings = MAX_LENGTH  # RoPE at base 1e6: the wired heads barely notice
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
        print(f"three-protocol toy built in {time.monotonic() - started:.0f} s: {out}")

    return cached("toy-dialects", asdict(recipe), build)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Build (or find in the cache) the three-protocol toy model.")
    parser.add_argument("--steps", type=int, default=DialectRecipe().steps, help="training steps")
    args = parser.parse_args(argv)
    print(toy_dialect_model(DialectRecipe(steps=args.steps)))


if __name__ == "__main__":
    main()
