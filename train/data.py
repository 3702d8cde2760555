"""Training questions as a TRL dataset: MuSiQue train or a question file, prompts that fit.

``--data musique`` uses the bundled MuSiQue-Ans train questions (19,938); a path reads
any question file :mod:`research.questions` reads (MuSiQue jsonl with aliases,
the json list, FlashRAG jsonl). Rows carry the question and every gold answer; the
prompt template is applied in the rollout, where the tokenizer is.
"""

from __future__ import annotations

import logging
from typing import Any

from research.questions import Example, load_examples, musique_train

log = logging.getLogger("research.train")


def train_examples(data: str) -> list[Example]:
    return musique_train() if data == "musique" else load_examples(data)


def to_dataset(
    examples: list[Example], tokenizer: Any, template: str, max_prompt_tokens: int, protocol: str = "research"
) -> Any:
    """A ``datasets.Dataset`` with ``prompt`` (the question) and ``answers``; prompts over the limit are dropped."""
    from datasets import Dataset

    from research.protocol import get_protocol

    prompts = [get_protocol(protocol).render_prompt(e.question, template, tokenizer) for e in examples]
    lengths = map(len, tokenizer(prompts)["input_ids"])  # one batch: the tokenizer spreads it over the cores
    keep = [e for e, n in zip(examples, lengths, strict=True) if n <= max_prompt_tokens]
    if dropped := len(examples) - len(keep):
        log.warning("dropped %d question(s) whose prompt is over %d tokens", dropped, max_prompt_tokens)
    if not keep:
        raise ValueError("no training question fits --max-prompt-tokens")
    return Dataset.from_dict({"prompt": [e.question for e in keep], "answers": [list(e.answers) for e in keep]})
