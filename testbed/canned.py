"""The canned model: a tiny Qwen2 whose weights are set by hand to give one reply to every prompt.

Trained test models answer what they were trained on; what they do with anything else
(a greeting, an off-topic question, a conversation) depends on the CPU that trained
them. Tests that send free text, such as LangChain's standard chat-model suites, need a
model that answers *every* prompt, on any machine. This one does so by construction:

    <think> I need to search. </think> <search> city </search>
    <result> ... </result> <answer> The final answer is \\boxed{ country} </answer>

It is a bigram machine in the Qwen2 architecture, on the toy model's tokenizer (one
token per tag). Every layer's output projections are zero, so the residual stream at
each position is its token's embedding; the embeddings are orthogonal directions (one
per token of the reply, one shared by every other token) and the untied output matrix
maps each direction to the reply's next token with a margin of :data:`MARGIN` logits.
Whatever the prompt, the first token is `` <think>``; after `` </search>`` or
``</result>`` comes `` <answer>``; the reply ends with EOS. With a 50-logit margin even
sampling at temperature 1 picks another token with probability below 1e-18.
vLLM and transformers load it like any checkpoint.
"""

from __future__ import annotations

from dataclasses import asdict
from itertools import pairwise
from pathlib import Path
from typing import Any

from research.testbed.models import TinyConfig, cached, new_qwen2
from research.testbed.toy_model import EOS, ToyRecipe, train_tokenizer

QUERY = "city"
ANSWER = "country"
BEFORE = f" <think> I need to search. </think> <search> {QUERY} </search>"
AFTER = f" <answer> The final answer is \\boxed{{ {ANSWER}}} </answer>"
"""The reply: :data:`BEFORE`, the result block the loop appends, :data:`AFTER`, EOS."""

MARGIN = 50.0
CONFIG = TinyConfig(hidden_size=64, layers=1, heads=1, kv_heads=1, intermediate_size=64, max_position=2048)


def successors(tokenizer: Any) -> dict[int | None, int]:
    """Next token id after each reply token; ``None`` stands for every other token.

    Raises ``ValueError`` if the reply repeats a token (a bigram cannot tell the two apart).
    """
    before, after = tokenizer.encode(BEFORE), tokenizer.encode(AFTER)
    eos, result_end = tokenizer.convert_tokens_to_ids([EOS, "</result>"])
    chain = [*before, *after, eos]
    if len(set(chain)) != len(chain) or result_end in chain:
        raise ValueError(f"the canned reply repeats a token: {tokenizer.convert_ids_to_tokens(chain)}")
    nxt: dict[int | None, int] = {None: chain[0]}
    nxt |= dict(pairwise(chain))
    nxt[before[-1]] = after[0]  # no result block (search budget spent): answer all the same
    nxt[result_end] = after[0]
    return nxt


def build(out: Path) -> None:
    """Write the canned checkpoint and its tokenizer to ``out``."""
    import torch

    tokenizer = train_tokenizer(ToyRecipe())
    nxt = successors(tokenizer)
    model = new_qwen2(CONFIG, tokenizer, tie=False)
    hidden = CONFIG.hidden_size
    known = [t for t in nxt if t is not None]
    if len(known) + 1 > hidden:
        raise ValueError(f"{len(known) + 1} directions do not fit a hidden size of {hidden}")
    direction = {t: i + 1 for i, t in enumerate(known)}  # 0: every other token
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        embed = model.model.embed_tokens.weight
        embed.zero_()
        embed[:, 0] = 1.0
        head = model.lm_head.weight
        head.zero_()
        for token, i in direction.items():
            embed[token] = 0.0
            embed[token, i] = 1.0
        # The final RMSNorm scales a unit direction to sqrt(hidden): divide it back out.
        for token, following in nxt.items():
            head[following, direction.get(token, 0)] = MARGIN / hidden**0.5
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def canned_model() -> Path:
    """Path of the canned checkpoint, built on first use (a few seconds) and cached."""
    return cached("canned", {"before": BEFORE, "after": AFTER, "margin": MARGIN, "config": asdict(CONFIG)}, build)
