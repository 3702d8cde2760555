"""The ReSearch tag language: an incremental parser, query extraction, the result block.

A response interleaves ``<think>``, ``<search>``, ``<result>`` and ``<answer>``
regions. Tags are text, not tokens (``</search>`` is three Qwen tokens), so
everything here works on strings and is safe to feed deltas split anywhere.

:class:`TagParser` is the streaming parser: feed it text of any size and it
emits :class:`Segment` objects in order; joining their ``text`` gives back the
input exactly, nothing lost or duplicated. Rules:

* outside any region, an opening tag opens its region;
* inside a region, its own closing tag closes it, and an opening tag of another
  kind (a model that forgot ``</think>``) switches region;
* inside ``<result>`` only ``</result>`` counts: retrieved text is data, not markup;
* any other text, stray closing tags included, belongs to the current region
  (``"text"`` outside all of them).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

Kind = Literal["text", "think", "search", "result", "answer"]
REGIONS: tuple[Kind, ...] = ("think", "search", "result", "answer")

SEARCH_STOP = "</search>"
"""The stop string that hands control from the model to the retriever."""

EMPTY_QUERY_RESULT = "nothing to search"
"""What an empty ``<search></search>`` gets back, as in the reference pipeline."""


@dataclass(frozen=True, slots=True)
class Segment:
    """A run of text inside one region; ``tag`` marks the tag text itself."""

    kind: Kind
    text: str
    tag: bool = False


def _opening(kind: Kind) -> str:
    return f"<{kind}>"


def _closing(kind: Kind) -> str:
    return f"</{kind}>"


def _tags_in(state: Kind) -> dict[str, Kind]:
    """The tags recognised in ``state``, mapped to the region each one leads to."""
    if state == "result":
        return {_closing("result"): "text"}
    tags: dict[str, Kind] = {_opening(k): k for k in REGIONS if k != state}
    if state != "text":
        tags[_closing(state)] = "text"
    return tags


_TAGS: dict[Kind, dict[str, Kind]] = {state: _tags_in(state) for state in ("text", *REGIONS)}


def _partial_tag_suffix(buffer: str, tags: Iterable[str]) -> int:
    """Length of the longest suffix of ``buffer`` that is a proper prefix of a tag."""
    start = buffer.rfind("<")
    if start < 0:
        return 0
    tail = buffer[start:]
    return len(tail) if any(tag.startswith(tail) and tag != tail for tag in tags) else 0


class TagParser:
    """Incremental parser: ``feed`` text deltas, then ``close`` once at the end.

    >>> p = TagParser()
    >>> [(s.kind, s.text) for s in [*p.feed("<thi"), *p.feed("nk> hm </think>"), *p.close()]]
    [('think', '<think>'), ('think', ' hm '), ('think', '</think>')]
    """

    def __init__(self) -> None:
        self.state: Kind = "text"
        self._buffer = ""

    def feed(self, delta: str) -> list[Segment]:
        """Segments completed by ``delta``; text that may start a tag is held back."""
        self._buffer += delta
        out: list[Segment] = []
        while self._buffer:
            tags = _TAGS[self.state]
            hit = min(
                ((pos, tag) for tag in tags if (pos := self._buffer.find(tag)) >= 0),
                default=None,
            )
            if hit is None:
                keep = _partial_tag_suffix(self._buffer, tags)
                ready = self._buffer[: len(self._buffer) - keep]
                if ready:
                    out.append(Segment(self.state, ready))
                self._buffer = self._buffer[len(ready) :]
                break
            pos, tag = hit
            if pos:
                out.append(Segment(self.state, self._buffer[:pos]))
            target = tags[tag]
            out.append(Segment(self.state if target == "text" else target, tag, tag=True))
            self.state = target
            self._buffer = self._buffer[pos + len(tag) :]
        return out

    def close(self) -> list[Segment]:
        """Flush what is held back: at the end of input it can no longer become a tag."""
        rest, self._buffer = self._buffer, ""
        return [Segment(self.state, rest)] if rest else []


def merge(segments: Iterable[Segment]) -> list[Segment]:
    """Join neighbouring non-tag segments of the same region (streaming yields pieces)."""
    out: list[Segment] = []
    for seg in segments:
        if out and not seg.tag and not out[-1].tag and out[-1].kind == seg.kind:
            out[-1] = Segment(seg.kind, out[-1].text + seg.text)
        else:
            out.append(seg)
    return out


def parse(text: str) -> list[Segment]:
    """One-shot parse; equal to streaming the same text in any pieces, then :func:`merge`.

    >>> [(s.kind, s.text, s.tag) for s in parse("<search> q </search>")]
    [('search', '<search>', True), ('search', ' q ', False), ('search', '</search>', True)]
    """
    parser = TagParser()
    return merge([*parser.feed(text), *parser.close()])


def extract_query(text: str) -> str | None:
    """The query of the search that ``text`` ends with, stripped; None if it has none.

    The query is whatever lies between the LAST ``<search>`` and the closing
    ``</search>`` (the generation stop), exactly as in the reference loop.

    >>> extract_query("<think>x</think> <search> capital of France </search>")
    'capital of France'
    >>> extract_query("<search> a </search> <search>b</search>")
    'b'
    """
    end = text.rfind(SEARCH_STOP)
    start = text.rfind("<search>", 0, end) if end >= 0 else -1
    if start < 0:
        return None
    return text[start + len("<search>") : end].strip()


class HasContents(Protocol):
    """A retrieved passage: only its ``contents`` (``"Title"\\ntext``) enter the prompt."""

    contents: str


def format_result(passages: Sequence[HasContents] | Sequence[str]) -> str:
    """The result block appended after ``</search>``, byte-exact as trained.

    Passage contents are joined with a blank line and stripped; note the leading space.

    >>> format_result(['"A"\\nfirst', '"B"\\nsecond'])
    ' <result>\\n"A"\\nfirst\\n\\n"B"\\nsecond\\n</result>'
    """
    joined = "\n\n".join(p if isinstance(p, str) else p.contents for p in passages).strip()
    return f" <result>\n{joined}\n</result>"
