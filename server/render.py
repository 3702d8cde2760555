"""From an OpenAI request to the model's view and back: prompts, reasoning split, citations."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from research.http_errors import APIError
from research.protocol import INSTRUCT_SYSTEM, Search, Segment, TagParser, TemplateName, render_prompt
from research.server.schemas import Message


def chat_prompt(messages: Sequence[Message], template: TemplateName, tokenizer: Any) -> list[int]:
    """Token ids of the prompt for a conversation, in the template the model was trained with.

    Instruct models get the conversation through their chat template, with the
    ReSearch system prompt unless the client sent its own. Base models were
    trained on one question in the base template, so they take exactly one user
    message (a 400 otherwise).
    """
    if template == "base":
        if len(messages) != 1 or messages[0].role != "user":
            raise APIError(
                400,
                "this model uses the ReSearch base template, which holds one question: "
                "send exactly one user message (or serve an instruct model for conversations)",
                param="messages",
            )
        return tokenizer.encode(render_prompt(messages[0].text, "base"), add_special_tokens=False)
    turns = [{"role": "system" if m.role == "developer" else m.role, "content": m.text} for m in messages]
    if turns[0]["role"] != "system":
        turns.insert(0, {"role": "system", "content": INSTRUCT_SYSTEM})
    text = tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
    return tokenizer.encode(text, add_special_tokens=False)


class ReasoningSplitter:
    """Routes streamed response text to ``reasoning`` or ``content``.

    Parsed (default): everything before the first ``<answer>`` is reasoning, tags
    and result blocks included; the answer's inside and anything after it is
    content (the ``<answer>`` tags themselves are dropped). Raw: all of it is
    content, tags visible.

    >>> s = ReasoningSplitter(raw=False)
    >>> s.feed("<think> x </think> <ans"), s.feed("wer> 42 </answer>"), s.close()
    (('<think> x </think> ', ''), ('', ' 42 '), ('', ''))
    """

    def __init__(self, *, raw: bool) -> None:
        self.raw = raw
        self._parser = TagParser()
        self._answering = False

    def feed(self, text: str) -> tuple[str, str]:
        """(reasoning, content) for the next piece of response text."""
        return ("", text) if self.raw else self._route(self._parser.feed(text))

    def close(self) -> tuple[str, str]:
        """Whatever the parser held back (a partial tag at the very end)."""
        return ("", "") if self.raw else self._route(self._parser.close())

    def _route(self, segments: Sequence[Segment]) -> tuple[str, str]:
        reasoning, content = [], []
        for s in segments:
            self._answering = self._answering or s.kind == "answer"
            if not self._answering:
                reasoning.append(s.text)
            elif not (s.kind == "answer" and s.tag):
                content.append(s.text)
        return "".join(reasoning), "".join(content)


def hit_json(p: Any) -> dict[str, Any]:
    """A retrieved passage as the stream announces it."""
    return {"id": p.id, "title": p.title, "score": p.score}


def search_json(i: int, search: Search) -> dict[str, Any]:
    return {"index": i, "query": search.query, "results": [hit_json(p) for p in search.passages]}


def citations(searches: Sequence[Search]) -> list[dict[str, Any]]:
    """Every passage the response was given, once, in the order it first came back."""
    seen: dict[str, dict[str, Any]] = {}
    for i, search in enumerate(searches):
        for p in search.passages:
            seen.setdefault(p.id, {**hit_json(p), "search_index": i})
    return list(seen.values())
