"""Training and validation questions: MuSiQue train, 100 random MuSiQue dev questions.

``--data musique`` uses the bundled MuSiQue-Ans train questions (19,938); a path reads
any question file :mod:`research.evaluation.datasets` reads (MuSiQue jsonl with aliases,
the json list, FlashRAG jsonl). Rows carry the question and every gold answer; the
prompt template is applied in the rollout, where the tokenizer is.
"""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path
from typing import Any

from research.evaluation.datasets import Example, bundled, example, load_examples

MUSIQUE_TRAIN = Path(__file__).parent / "data" / "musique_train.json.gz"


def musique_train() -> list[Example]:
    with gzip.open(MUSIQUE_TRAIN, "rt", encoding="utf-8") as f:
        return [example(row, f"MuSiQue train question {i}") for i, row in enumerate(json.load(f), 1)]


def train_examples(data: str) -> list[Example]:
    return musique_train() if data == "musique" else load_examples(data)


def validation_examples(n: int, seed: int) -> list[Example]:
    """``n`` random MuSiQue dev questions (the paper's validation set)."""
    dev = bundled("musique", limit=None, seed=seed)
    return random.Random(seed).sample(dev, min(n, len(dev)))


def to_dataset(examples: list[Example], tokenizer: Any, template: str, max_prompt_tokens: int) -> Any:
    """A ``datasets.Dataset`` with ``prompt`` (the question) and ``answers``; prompts over the limit are dropped."""
    from datasets import Dataset

    from research.protocol import render_prompt

    keep = [
        e
        for e in examples
        if len(tokenizer.encode(render_prompt(e.question, template, tokenizer))) <= max_prompt_tokens
    ]
    if dropped := len(examples) - len(keep):
        print(f"dropped {dropped} question(s) whose prompt is over {max_prompt_tokens} tokens")
    if not keep:
        raise ValueError("no training question fits --max-prompt-tokens")
    return Dataset.from_dict({"prompt": [e.question for e in keep], "answers": [list(e.answers) for e in keep]})
