"""Question sets in the shapes they are published in, read into one :class:`Example` type.

Accepted shapes (detected per record, so a file may be any of them):

* FlashRAG jsonl: ``id``, ``question``, ``golden_answers`` (list);
* HotpotQA (official json or HF jsonl): ``_id``/``id``, ``question``, ``answer``;
* 2WikiMultiHopQA: ``_id``, ``question``, ``answer`` (+ ``answer_aliases`` when present);
* MuSiQue: ``id``, ``question``, ``answer``, ``answer_aliases``;
* Bamboogle and other question/answer lists: ``idx``, ``question``, ``answer``.

A file may be jsonl or a json list (MuSiQue's train file is the latter).
"""

from __future__ import annotations

import gzip
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BUNDLED = Path(__file__).parent / "data"

DATASETS = ("hotpotqa", "2wikimultihopqa", "musique", "bamboogle")
"""The paper's four benchmarks (pass a path to evaluate any other)."""


@dataclass(frozen=True, slots=True)
class Example:
    """One question with every accepted answer (the first is the canonical one)."""

    id: str
    question: str
    answers: tuple[str, ...]


def example(row: Any, where: str) -> Example:
    """An :class:`Example` from one record of any accepted shape; ``where`` names the record in errors.

    >>> example({"idx": 3, "question": "Q?", "answer": "A"}, "line 1")
    Example(id='3', question='Q?', answers=('A',))
    >>> example({"id": "m1", "question": "Q", "answer": "A", "answer_aliases": ["B"]}, "line 1").answers
    ('A', 'B')
    >>> example({"id": "f1", "question": "Q", "golden_answers": "Paris"}, "line 1").answers  # one answer, not 5
    ('Paris',)
    """
    if not isinstance(row, dict):
        raise ValueError(f"{where}: not a JSON object but {type(row).__name__} {json.dumps(row)[:40]}")
    if not isinstance(row.get("question"), str) or not row["question"].strip():
        got = "no 'question' field" if "question" not in row else f"'question' is {json.dumps(row['question'])[:40]}"
        raise ValueError(f"{where}: a record needs a non-empty 'question' string; it has {got}")
    if "golden_answers" in row:
        answers = row["golden_answers"]
    elif "answer" in row:
        answers = row["answer"] if isinstance(row["answer"], list) else [row["answer"]]
        answers = answers + (row.get("answer_aliases") or [])
    else:
        raise ValueError(f"{where}: the record has no 'answer' or 'golden_answers' field")
    answers = [answers] if isinstance(answers, str) else answers  # a string is one answer, not its characters
    answers = [str(a) for a in answers if a is not None and str(a).strip()]
    if not answers:
        raise ValueError(f"{where}: the record has an empty answer")
    ident = next((row[k] for k in ("id", "_id", "idx") if k in row), where)
    return Example(str(ident), row["question"].strip(), tuple(dict.fromkeys(answers)))


def _records(path: Path) -> Iterator[tuple[str, Any]]:
    """(where, record) for each record: "line N" of a jsonl file, "item N" of a JSON list (one-based)."""
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        for n, row in enumerate(json.loads(text), 1):
            yield f"item {n}", row
        return
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                yield f"line {n}", json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"line {n}: not JSON ({exc.msg})") from None


def sample(examples: list[Example], *, limit: int | None = None, seed: int = 0) -> list[Example]:
    """A random sample of ``limit`` examples (fixed by ``seed``), kept in their original order."""
    if not examples:
        raise ValueError("the dataset holds no questions")
    if limit is not None and limit < 1:
        raise ValueError(f"the limit must be at least 1, got {limit}")
    ids = [e.id for e in examples]
    if len(set(ids)) != len(ids):
        raise ValueError("question ids are not unique")
    if limit is not None and limit < len(examples):
        keep = set(random.Random(seed).sample(range(len(examples)), limit))
        examples = [e for i, e in enumerate(examples) if i in keep]
    return examples


def load_examples(path: str | Path, *, limit: int | None = None, seed: int = 0) -> list[Example]:
    """The examples of ``path``; with ``limit``, a :func:`sample` of them."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no dataset file at {path}")
    try:
        return sample([example(row, where) for where, row in _records(path)], limit=limit, seed=seed)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


def demo_questions() -> list[dict[str, Any]]:
    """The bundled dev samples: ``dataset``, ``id``, ``question``, ``answer`` (list), ``gold`` (passage ids
    of the bundled demo corpus, for retrieval benchmarks)."""
    with gzip.open(BUNDLED / "demo_questions.jsonl.gz", "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def bundled(name: str, *, limit: int | None, seed: int) -> list[Example]:
    """The bundled sample of one of the paper's datasets."""
    if name == "bamboogle":
        return load_examples(BUNDLED / "bamboogle.jsonl", limit=limit, seed=seed)
    rows = [r for r in demo_questions() if r["dataset"] == name]
    return sample([example(r, f"{name} question {i}") for i, r in enumerate(rows, 1)], limit=limit, seed=seed)


def musique_train() -> list[Example]:
    """The bundled MuSiQue-Ans train questions (19,938), the paper's training set."""
    with gzip.open(BUNDLED / "musique_train.json.gz", "rt", encoding="utf-8") as f:
        return [example(row, f"MuSiQue train question {i}") for i, row in enumerate(json.load(f), 1)]


def validation_examples(n: int, seed: int) -> list[Example]:
    """``n`` random MuSiQue dev questions (the paper's validation set)."""
    dev = bundled("musique", limit=None, seed=seed)
    return random.Random(seed).sample(dev, min(n, len(dev)))
