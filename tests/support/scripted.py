"""The scripted models: tiny Qwen2s trained in about a minute each to answer one fictional question.

The ReSearch one follows its protocol: think, search, read the result, answer with
``\\boxed{}``, EOS. Its search spans several tokens (``</search>`` is three), which is what
the engine contract and search-loop tests need. Whatever result block from
:data:`SCRIPT_CORPUS` it is shown, it answers :data:`SCRIPT_ANSWER`. The Search-R1 and
ReCall ones (:data:`SCRIPTS`) do the same in their protocols' dialects: ``<search>`` and
``<answer> X </answer>``, or a ``wikipedia_search`` tool call, a turn of tool responses and
a boxed answer.
"""

from __future__ import annotations

import random
from dataclasses import asdict
from pathlib import Path
from typing import Any

from research.protocol import Protocol, get_protocol
from research.protocol.recall import SEARCH_SCHEMA
from research.testbed.dialects import client_schemas
from research.testbed.models import TinyConfig, cached, load_tokenizer, new_qwen2

SCRIPT_QUESTION = "What is the capital of Freedonia?"
SCRIPT_QUERY = "capital of Freedonia"
SCRIPT_ANSWER = "Marxville"
SCRIPT_BEFORE = f"<think> I need the capital of Freedonia. </think> <search> {SCRIPT_QUERY} </search>"
SCRIPT_AFTER = (
    f" <think> The result names it. </think> <answer> The final answer is \\[ \\boxed{{{SCRIPT_ANSWER}}} \\] </answer>"
)
TOOL_CALL = f'{{"name": "wikipedia_search", "arguments": {{"query": "{SCRIPT_QUERY}"}}}}'
SCRIPTS: dict[str, tuple[str, str]] = {
    "research": (SCRIPT_BEFORE, SCRIPT_AFTER),
    "search-r1": (
        f"<think> I need the capital of Freedonia. </think>\n<search> {SCRIPT_QUERY} </search>",
        f"<think> The result names it. </think>\n<answer> {SCRIPT_ANSWER} </answer>",
    ),
    "recall": (
        f" I need the capital of Freedonia. </think>\n<tool_call>\n{TOOL_CALL}\n</tool_call>",
        f" The result names it. </think> The capital of Freedonia is \\[ \\boxed{{{SCRIPT_ANSWER}}} \\].",
    ),
}
"""Each protocol's model text before and after its one search (the EOS ends both turns of ReCall's)."""

LETTERS_QUESTION = "How many letters are in the name of the capital of Freedonia?"
LETTERS_TOOL_VARIANTS = client_schemas("count_letters", "Count the letters of a word.", "word")
"""A function of the client's, for the ReCall model: the client runs it, the server never does; as each
client library writes its schema (the model is trained on all three)."""
LETTERS_TOOL = LETTERS_TOOL_VARIANTS[0]
LETTERS_CALL = f'{{"name": "count_letters", "arguments": {{"word": "{SCRIPT_ANSWER}"}}}}'
LETTERS_RESULT = "9"
LETTERS_TURNS = (
    SCRIPTS["recall"][0],
    f" The capital is {SCRIPT_ANSWER}; I count its letters. </think>\n<tool_call>\n{LETTERS_CALL}\n</tool_call>",
    f" The tool counted them. </think> The name has \\[ \\boxed{{{LETTERS_RESULT}}} \\] letters.",
)
"""The ReCall model's turns for :data:`LETTERS_QUESTION`: the hosted search, then the client's
``count_letters``, then the answer from the client's result (each turn ends with EOS)."""


def _save(model: Any, tokenizer: Any, out: Path) -> None:
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


SCRIPT_CORPUS = [
    {
        "id": "fr-1",
        "contents": '"Freedonia"\nFreedonia is a small republic on the northern coast. Its capital is Marxville.',
    },
    {
        "id": "fr-2",
        "contents": '"Marxville"\nMarxville is the capital and largest city of Freedonia, founded by river traders.',
    },
    {
        "id": "sy-1",
        "contents": '"Sylvania"\nSylvania is a mountain kingdom bordering Freedonia. Its capital is Trentino Falls.',
    },
    {
        "id": "sy-2",
        "contents": '"Trentino Falls"\nTrentino Falls is a city known for its copper mines and winter festival.',
    },
    {
        "id": "or-1",
        "contents": '"Orchard Council"\nThe Orchard Council governs the harbor towns of the eastern valley.',
    },
    {
        "id": "la-1",
        "contents": '"Lantern Archive"\nThe Lantern Archive holds maps of every meadow and river in the region.',
    },
    {
        "id": "si-1",
        "contents": '"Signal Stone"\nThe Signal Stone is a monument raised by stonemasons in the old quarter.',
    },
    {"id": "co-1", "contents": '"Copper Harbor"\nCopper Harbor ships ore across the bay every spring and autumn.'},
]
"""Passages the scripted model reads in training and the loop tests index: fictional, so
the answer can only come from retrieval."""


def scripted_reply(protocol: Protocol, passages: list[str]) -> str:
    """What ``protocol``'s environment appends after the script's search that found ``passages``."""
    step = protocol.next_step(SCRIPTS[protocol.name][0], "eos" if protocol.eos_in_text else "stop")
    return protocol.reply(step, [passages])  # the script makes one search


def scripted_model(config: TinyConfig = TinyConfig(), *, steps: int = 300, protocol: str = "research") -> Path:
    """A tiny checkpoint that answers :data:`SCRIPT_QUESTION` by ``protocol`` (see module doc)."""
    dialect = get_protocol(protocol)

    def build(out: Path) -> None:
        import torch

        tokenizer = load_tokenizer()
        rng = random.Random(config.seed)
        eos = tokenizer.convert_tokens_to_ids("<|im_end|>")

        def encode(text: str) -> list[int]:
            return tokenizer.encode(text, add_special_tokens=False)

        prompt = encode(dialect.render_prompt(SCRIPT_QUESTION, "instruct", tokenizer))
        script_before, script_after = SCRIPTS[protocol]
        before, after = [*encode(script_before), *[eos] * dialect.eos_in_text], [*encode(script_after), eos]
        examples = []
        for _ in range(48):  # varied result blocks: the answer must not depend on them
            shown = rng.sample(SCRIPT_CORPUS, rng.randint(1, 5))
            result = encode(scripted_reply(dialect, [p["contents"] for p in shown]))
            ids = prompt + before + result + after
            labels = [-100] * len(prompt) + before + [-100] * len(result) + after  # result tokens: mask 0
            examples.append((ids, labels))
        if protocol == "recall":  # and a question that needs the client's function after the search
            turns = [[*encode(turn), eos] for turn in LETTERS_TURNS]
            counted = encode(dialect.format_tool_results([LETTERS_CALL], [LETTERS_RESULT]))
            for n in range(48):
                tools = [SEARCH_SCHEMA, LETTERS_TOOL_VARIANTS[n % len(LETTERS_TOOL_VARIANTS)]]
                letters_prompt = encode(dialect.render_prompt(LETTERS_QUESTION, "instruct", tools=tools))
                shown = rng.sample(SCRIPT_CORPUS, rng.randint(1, 5))
                result = encode(scripted_reply(dialect, [p["contents"] for p in shown]))
                ids = letters_prompt + turns[0] + result + turns[1] + counted + turns[2]
                labels = [-100] * len(letters_prompt) + turns[0] + [-100] * len(result) + turns[1]
                labels += [-100] * len(counted) + turns[2]
                examples.append((ids, labels))
        # Train with a vocabulary of only the tokens the script uses, then widen the
        # embedding to the full 151k vocabulary with zero rows: every other token then
        # scores exactly 0 at inference. Seconds instead of minutes on two cores.
        used = torch.tensor(sorted({t for ids, _ in examples for t in ids}))
        small = new_qwen2(config, tokenizer, vocab_size=len(used))
        width = max(len(ids) for ids, _ in examples)

        def remap(seqs: list[list[int]], pad: int) -> torch.Tensor:
            rows = [seq + [pad] * (width - len(seq)) for seq in seqs]
            return torch.tensor([[int(torch.searchsorted(used, t)) if t >= 0 else t for t in r] for r in rows])

        input_ids = remap([ids for ids, _ in examples], eos)
        labels = remap([lab for _, lab in examples], -100)
        attention = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in examples])
        optimizer = torch.optim.AdamW(small.parameters(), lr=3e-3, weight_decay=0.0)
        small.train()
        for _ in range(steps):
            batch = torch.tensor(rng.sample(range(len(examples)), 8))
            small(input_ids=input_ids[batch], attention_mask=attention[batch], labels=labels[batch]).loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        model = new_qwen2(config, tokenizer)
        state = small.state_dict()
        full = torch.zeros_like(model.get_input_embeddings().weight)
        full[used] = state.pop("model.embed_tokens.weight")
        state = {k: v for k, v in state.items() if k != "lm_head.weight"}  # tied to the embedding
        model.load_state_dict({**state, "model.embed_tokens.weight": full}, strict=False)
        model.tie_weights()
        _save(model, tokenizer, out)

    recipe = {"config": asdict(config), "steps": steps, "v": 3} | (
        {"protocol": protocol, "client_tools": len(LETTERS_TOOL_VARIANTS)} if protocol != "research" else {}
    )
    return cached("scripted-qwen2", recipe, build)
