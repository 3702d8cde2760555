"""The toy ReSearch model: a tiny Qwen2 trained on CPU to reason with search on the toy world.

How it is built (one command, cached by recipe hash, about 7 minutes on two cores)::

    python -m research.testbed.toy_model

1. A toy world (:mod:`research.testbed.world`); its *train* passages are indexed
   in LanceDB with the real MiniLM embedder.
2. Oracle traces for the train 1-hop and bridge questions, with result blocks
   from that real retriever, rendered with the **base** ReSearch template (the
   whole prompt is one string), exactly the token layout of the search loop.
3. A small byte-level BPE tokenizer, trained on the prompt, the oracle's phrases
   and names from a *different* seed, plus one token per tag (`` <search>``,
   `` \\boxed{``, ...). Why not Qwen2.5's 151k vocabulary: the softmax would
   cost most of the CPU budget, and a tokenizer fitted to the world's syllables
   (not its names) splits unseen names into pieces the model has seen, which is
   what lets it copy names it never met.
4. A 2-layer, 3-head Qwen2 whose initial weights hold two copy mechanisms
   (:mod:`research.testbed.circuit`): an induction circuit, which copies a name
   where the words before it match an earlier mention ("made by X" from the
   passage's "made by X"), and a pointer head, which at `` <search>`` and
   `` \\boxed{`` copies the first piece of the entity named last. The oracle
   traces are written so that these two cover every name the model writes.
   Trained from scratch in this budget, the model never learned to copy names
   (exact match 0 on held-out questions); with the induction circuit alone it
   reached 0.53, failing mostly on the first piece of queries and answers.
5. Copy drills on names of another world (:func:`copy_examples`), then
   supervised warm-up on the traces with the result tokens masked out of the
   loss, exactly as in RL training (mask 0). The third head of each layer is
   left to training.

Measured with ``python -m research.testbed.acceptance`` (README, "The offline
test bed"): exact match 0.96 on 200 held-out bridge questions, 0.96 on the
counterfactual index, 0.00 without retrieval.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from research.protocol.tags import format_result
from research.protocol.templates import render_prompt
from research.retrieval import Embedder, Passage, PassageIndex, build_index, connect
from research.testbed.circuit import wire_copy_circuit, wire_pointer_head
from research.testbed.embedder import EMBEDDER
from research.testbed.models import TinyConfig, cached, new_qwen2
from research.testbed.world import World, make_world

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
EOS = "<|endoftext|>"
TAGS = [" <think>", " </think>", " <search>", " </search>", " <result>", "</result>", " <answer>", " </answer>"]
BOXED = " \\boxed{"
TRIGGERS = [" <search>", BOXED]
"""Tokens a name follows with no words before it to match: the pointer head's triggers."""
Example = tuple[list[int], list[int]]
"""Input ids and labels (-100 where there is no loss)."""


@dataclass(frozen=True, slots=True)
class ToyRecipe:
    """Everything that determines the toy model (its cache key)."""

    seed: int = 0
    chains: int = 1000
    top_k: int = 1
    """Passages per search, in training and in the acceptance run (top-1 recall is 1.0 here)."""
    vocab_size: int = 1024
    model: TinyConfig = TinyConfig(
        hidden_size=192, layers=2, heads=3, kv_heads=3, intermediate_size=512, max_position=2048, rope_theta=1e6
    )
    copy_steps: int = 200
    """Copy drills (:func:`copy_examples`) before the traces."""
    steps: int = 3000
    batch_size: int = 8
    lr: float = 5e-3
    version: int = 8


def tokenizer_world(recipe: ToyRecipe) -> World:
    """The world the tokenizer is fitted to: same syllables and phrases, none of the model's names."""
    return make_world(recipe.seed + 10_000, chains=recipe.chains)


def train_tokenizer(recipe: ToyRecipe) -> Any:
    """Byte-level BPE fitted to the template, the oracle's phrases and *other* names."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    fresh = tokenizer_world(recipe)
    texts = [render_prompt(q.question, "base") + "".join(q.turns) for q in fresh.questions("train")]
    texts += [p["contents"] for p in fresh.passages()]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=recipe.vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    tok.add_tokens([AddedToken(t, normalized=False) for t in [*TAGS, BOXED]])  # one token each, as plain text
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, pad_token=EOS)


def token_roles(recipe: ToyRecipe, tokenizer: Any) -> dict[str, list[int]]:
    """The pointer head's token sets (:func:`~research.testbed.circuit.wire_pointer_head`).

    Name starts are the capitalised word-initial pieces of names from another seed's
    world, less those the template and the oracle's own words use ("The", "It").
    """
    fresh = tokenizer_world(recipe)
    names = fresh.names("train")
    starts = {tokenizer.tokenize(" " + word)[0] for name in names for word in name.split()}
    words = render_prompt("", "base")
    for q in fresh.questions("train")[:600]:
        words += q.question + "".join(q.turns)
    for name in sorted(names, key=len, reverse=True):
        words = words.replace(name, "")
    fixed = set(tokenizer.tokenize(words))
    name_starts = {t for t in starts if t[1:2].isupper() and t not in fixed}
    vocab = tokenizer.get_vocab()
    continuations = {t for t in vocab if tokenizer.convert_tokens_to_string([t])[:1].isalnum()} | name_starts
    return {
        "triggers": tokenizer.convert_tokens_to_ids(TRIGGERS),
        "name_starts": sorted(vocab[t] for t in name_starts),
        "continuations": sorted(vocab[t] for t in continuations),
    }


def index_world(world: World, split: str, uri: str | Path, *, embedder: Embedder | None = None) -> PassageIndex:
    """A LanceDB index of the world's ``split`` passages (``"train"``, ``"test"`` or ``"all"``)."""
    passages = [Passage(p["id"], p["contents"]) for p in world.passages(split)]  # type: ignore[arg-type]
    return build_index(uri, passages, embedder=embedder or Embedder(EMBEDDER, device="cpu"))


def world_index(world: World, split: str = "all") -> PassageIndex:
    """The index of a world's ``split`` passages, built once per distinct passage set under the cache."""
    passages = world.passages(split)  # type: ignore[arg-type]
    digest = hashlib.sha256(json.dumps(passages, sort_keys=True).encode()).hexdigest()
    path = cached("toy-index", {"passages": digest}, lambda out: index_world(world, split, out / "index"))
    return connect(path / "index")


def training_examples(world: World, index: PassageIndex, tokenizer: Any, top_k: int) -> list[Example]:
    """(input ids, labels) per train bridge or 1-hop question; -100 on prompt and result tokens.

    Comparison questions are left out: their second search names an entity from
    the question, not the one named last, which the pointer head cannot copy.
    """
    questions = [q for q in world.questions("train") if q.type != "comparison"]
    queries = sorted({q for question in questions for q in question.queries})
    results = dict(zip(queries, index.search(queries, k=top_k), strict=True))
    eos = tokenizer.convert_tokens_to_ids(EOS)
    out = []
    for q in questions:
        ids = tokenizer.encode(render_prompt(q.question, "base"))
        labels = [-100] * len(ids)
        for i, turn in enumerate(q.turns):
            turn_ids = tokenizer.encode(turn) + ([eos] if i == len(q.turns) - 1 else [])
            ids, labels = ids + turn_ids, labels + turn_ids
            if i < len(q.queries):
                block = tokenizer.encode(format_result(results[q.queries[i]]))
                ids, labels = ids + block, labels + [-100] * len(block)
        out.append((ids, labels))
    return out


def copy_examples(recipe: ToyRecipe, tokenizer: Any, n: int = 10_000) -> list[Example]:
    """Copy drills: a list of names, other names, the list again (loss on the repeat).

    Names come from a world of another seed, so none is a train or test entity.
    A few hundred steps of these tune the wired copy circuit to the tokenizer's
    name pieces before the traces teach when to copy what.
    """
    fresh = make_world(recipe.seed + 20_000, chains=recipe.chains)
    names = fresh.names("train")
    pieces = [tokenizer.encode(" " + name) for name in names]
    rng = random.Random(recipe.seed)
    out = []
    for _ in range(n):
        listed = [t for name in rng.sample(pieces, rng.randint(3, 8)) for t in name]
        between = [t for name in rng.sample(pieces, rng.randint(0, 6)) for t in name]
        out.append((listed + between + listed, [-100] * (len(listed) + len(between) + 1) + listed[1:]))
    return out


def _common_prefix(seqs: list[list[int]]) -> list[int]:
    """The longest token prefix all sequences share, leaving each at least one token of its own."""
    n = min(len(s) for s in seqs) - 1
    for i in range(n):
        if any(s[i] != seqs[0][i] for s in seqs):
            return seqs[0][:i]
    return seqs[0][:n]


def fit(
    model: Any, groups: list[list[Example]], *, steps: int, batch_size: int, lr: float, seed: int, pad: int,
    desc: str,
) -> None:  # fmt: skip
    """AdamW with warm-up and cosine decay on random batches of (input ids, labels).

    Step ``i`` draws its batch from ``groups[i % len(groups)]`` (a group: examples that share a prompt).
    """
    import torch
    from tqdm import tqdm

    rng = random.Random(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.98))
    warmup = max(1, steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps)))
    )
    # When a group's examples open with the same tokens (the template), run them once
    # per step and share their keys/values across the batch (gradients flow through both).
    prefixes = [_common_prefix([ids for ids, _ in examples]) for examples in groups]
    groups = [
        [(ids[len(prefix) :], labels[len(prefix) :]) for ids, labels in examples]
        for prefix, examples in zip(prefixes, groups, strict=True)
    ]
    prefix_ids = [torch.tensor([prefix]) for prefix in prefixes]
    model.train()
    with tqdm(range(steps), desc=desc, unit="step") as bar:
        for step in bar:
            prefix = prefixes[step % len(groups)]
            batch = rng.sample(groups[step % len(groups)], batch_size)
            width = max(len(ids) for ids, _ in batch)
            input_ids = torch.tensor([ids + [pad] * (width - len(ids)) for ids, _ in batch])
            labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in batch])
            attention = torch.tensor([[1] * (len(prefix) + len(ids)) + [0] * (width - len(ids)) for ids, _ in batch])
            cache = None
            if prefix:
                cache = model.model(input_ids=prefix_ids[step % len(groups)], use_cache=True).past_key_values
                cache.batch_repeat_interleave(len(batch))
            loss = model(input_ids=input_ids, attention_mask=attention, past_key_values=cache, labels=labels).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
            bar.set_postfix(loss=f"{loss.item():.3f}")
    model.eval()


def _train(recipe: ToyRecipe, tokenizer: Any, examples: list[Example]) -> Any:
    """A fresh tiny Qwen2 with the copy circuit, drilled on copies, then trained on the traces."""
    model = new_qwen2(replace(recipe.model, seed=recipe.seed), tokenizer)
    wire_copy_circuit(model)
    wire_pointer_head(model, **token_roles(recipe, tokenizer))
    common = {"lr": recipe.lr, "seed": recipe.seed, "pad": tokenizer.pad_token_id}
    drills = copy_examples(recipe, tokenizer)
    fit(model, [drills], steps=recipe.copy_steps, batch_size=32, desc="copy drills", **common)
    fit(model, [examples], steps=recipe.steps, batch_size=recipe.batch_size, desc="training toy model", **common)
    return model


def toy_model(recipe: ToyRecipe = ToyRecipe()) -> Path:
    """Path of the toy ReSearch checkpoint for ``recipe``, built on first use."""

    def build(out: Path) -> None:
        started = time.monotonic()
        world = make_world(recipe.seed, chains=recipe.chains)
        tokenizer = train_tokenizer(recipe)
        index = index_world(world, "train", out / "train-index")
        examples = training_examples(world, index, tokenizer, recipe.top_k)
        model = _train(recipe, tokenizer, examples)
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
        print(f"toy model built in {time.monotonic() - started:.0f} s: {out}")

    return cached("toy-research", asdict(recipe), build)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Build (or find in the cache) the toy ReSearch model.")
    parser.add_argument("--steps", type=int, default=ToyRecipe().steps, help="training steps")
    args = parser.parse_args(argv)
    print(toy_model(ToyRecipe(steps=args.steps)))


if __name__ == "__main__":
    main()
