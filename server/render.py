"""From an OpenAI request to the model's view and back: prompts and the reasoning split."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from research.http_errors import APIError
from research.protocol import INSTRUCT_SYSTEM, Segment, TagParser, TemplateName, render_base_conversation
from research.server.requests import Message


def chat_prompt(messages: Sequence[Message], template: TemplateName, tokenizer: Any) -> list[int]:
    """Token ids of the prompt for a conversation, in the template the model was trained with.

    Instruct models get the whole conversation through their chat template (earlier
    assistant turns as their ``content``, our extension fields dropped), with the
    ReSearch system prompt unless the client sent its own. Base models get it in the base
    template's own words (:func:`~research.protocol.render_base_conversation`: ``User:`` and
    ``Assistant:`` turns after its instructions); a lone question is exactly the prompt they
    were trained on. Either way the conversation must end with the user's question.
    """
    if messages[-1].role != "user":
        raise APIError(
            400, f"the last message must be the user's question, not a {messages[-1].role} message",
            param=f"messages.{len(messages) - 1}.role", code="invalid_value",
        )  # fmt: skip
    if template == "base":
        text = render_base_conversation([(m.role, m.text) for m in messages])
        return tokenizer.encode(text, add_special_tokens=False)
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
