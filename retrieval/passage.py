"""A retrieved Wikipedia passage in the wiki-18 / DPR layout."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Passage:
    """One passage: ``contents`` is ``"Title"\\ntext``, exactly what the model reads.

    >>> p = Passage("7", '"Paris"\\nParis is the capital of France.')
    >>> p.title, p.text
    ('Paris', 'Paris is the capital of France.')
    """

    id: str
    contents: str
    score: float | None = None

    @property
    def title(self) -> str:
        return self.contents.split("\n", 1)[0].strip().strip('"')

    @property
    def text(self) -> str:
        return self.contents.split("\n", 1)[1] if "\n" in self.contents else ""
