"""Question data, read once for training and evaluation: the readers and the bundled sets.

* :mod:`~research.questions.datasets` — every published shape (FlashRAG, HotpotQA, 2Wiki,
  MuSiQue, Bamboogle) read into :class:`Example`; the bundled dev samples, all of
  Bamboogle and the MuSiQue train questions (provenance in ``data/SOURCES.md``).

Training and evaluation both read questions here; neither imports the other.
"""

from research.questions.datasets import (
    DATASETS,
    Example,
    bundled,
    demo_questions,
    example,
    load_examples,
    musique_train,
    sample,
    validation_examples,
)

__all__ = [
    "DATASETS",
    "Example",
    "bundled",
    "demo_questions",
    "example",
    "load_examples",
    "musique_train",
    "sample",
    "validation_examples",
]
