"""From an OpenAI request to the model's view and back: prompts and the reasoning split."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any, ClassVar

from research.http_errors import APIError
from research.protocol import (
    INSTRUCT_SYSTEM,
    Protocol,
    Segment,
    TagParser,
    TemplateName,
    render_base_conversation,
)
from research.protocol.recall import EOS
from research.protocol.search_r1 import PREFIX, normalize_question
from research.protocol.templates import through_chat_template
from research.server.continuations import Continuations
from research.server.requests import Message
from research.server.tool_calls import check_tool_messages, continued_ids, history


def chat_prompt(
    messages: Sequence[Message],
    template: TemplateName,
    tokenizer: Any,
    protocol: Protocol,
    tools: Sequence[dict[str, Any]] | None = None,
    continuations: Continuations | None = None,
) -> list[int]:
    """Token ids of the prompt for a conversation, as the model was trained to be prompted.

    ReSearch: instruct models get the whole conversation through their chat template
    (earlier assistant turns as their ``content``, our extension fields dropped), with the
    ReSearch system prompt unless the client sent its own. Base models get it in the base
    template's own words (:func:`~research.protocol.render_base_conversation`: ``User:`` and
    ``Assistant:`` turns after its instructions); a lone question is exactly the prompt they
    were trained on. The other protocols: the last question in the protocol's prompt, earlier
    turns before it (:func:`dialect_prompt`); ``tools`` are the schemas ReCall's prompt lists.
    The conversation must end with the user's question, or (ReCall) with the results of the
    client's functions that the last assistant message called (:mod:`research.server.tool_calls`).
    """
    if protocol.takes_tools:
        check_tool_messages(messages)
    else:
        for i, m in enumerate(messages):
            if m.role == "tool" or m.tool_calls:
                raise APIError(
                    400, f"tool calls are not supported by the {protocol.name} protocol: the server runs its search "
                    "tool itself", param=f"messages.{i}.{'role' if m.role == 'tool' else 'tool_calls'}",
                    code="unsupported_parameter",
                )  # fmt: skip
    if messages[-1].role == "tool":
        again = partial(chat_prompt, template=template, tokenizer=tokenizer, protocol=protocol, tools=tools,
                        continuations=continuations)  # fmt: skip
        return continued_ids(messages, again, tokenizer, protocol, continuations)
    if messages[-1].role != "user":
        raise APIError(
            400, f"the last message must be the user's question, not a {messages[-1].role} message",
            param=f"messages.{len(messages) - 1}.role", code="invalid_value",
        )  # fmt: skip
    if protocol.name != "research":
        text = dialect_prompt(messages, template, tokenizer, protocol, tools)
    elif template == "base":
        text = render_base_conversation([(m.role, m.text) for m in messages])
    else:
        turns = [{"role": "system" if m.role == "developer" else m.role, "content": m.text} for m in messages]
        if turns[0]["role"] != "system":
            turns.insert(0, {"role": "system", "content": INSTRUCT_SYSTEM})
        text = tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
    return tokenizer.encode(text, add_special_tokens=False)


def dialect_prompt(
    messages: Sequence[Message],
    template: TemplateName,
    tokenizer: Any,
    protocol: Protocol,
    tools: Sequence[dict[str, Any]] | None = None,
) -> str:
    """Search-R1's or ReCall's prompt for a conversation; a lone question is exactly the trained prompt.

    Search-R1: its instructions and the question are the last user turn of the chat template,
    after the earlier turns (a client's system message replaces the template's default one);
    its base template (no chat template) has room for one question only. ReCall: its system
    prompt listing ``tools`` (a client's system text follows it after a blank line), the
    earlier turns in ChatML (function calls and results as the model writes and reads them),
    then the question.
    """
    *earlier, last = messages
    turns = [("system" if m.role == "developer" else m.role, m.text) for m in earlier]
    if protocol.name == "search-r1":
        if template == "base" and turns:
            raise APIError(
                400, "a Search-R1 model on its base template takes one question, not a conversation; serve it with "
                "--template instruct (its chat template) to send earlier turns", param="messages", code="invalid_value",
            )  # fmt: skip
        if template == "base" or not turns:
            return protocol.render_prompt(last.text, template, tokenizer)
        question = PREFIX.replace("{question}", normalize_question(last.text))
        chat = [{"role": role, "content": text} for role, text in turns] + [{"role": "user", "content": question}]
        return through_chat_template(chat, tokenizer)
    prompt = protocol.render_prompt(last.text, template, tokenizer, tools=tools)
    system_end = prompt.index(EOS)
    extra = "".join(f"\n\n{text}" for role, text in turns if role == "system")
    earlier_turns = history([m for m in earlier if m.role not in ("system", "developer")])
    question = prompt.index("<|im_start|>user\n")
    return prompt[:system_end] + extra + prompt[system_end:question] + earlier_turns + prompt[question:]


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


class ToolTurnSplitter:
    """Routes ReCall's response text: the answer is what a turn writes after ``</think>`` outside its tool calls.

    Every turn opens inside ``<think>`` (the prompt and each tool-response turn end with it);
    thinking, ``<tool_call>`` bodies, the tool-response turns and the tags are reasoning.
    White space before a tag is held back so a turn of calls adds nothing to the content.
    Raw: all of it is content.

    >>> s = ToolTurnSplitter(raw=False)
    >>> s.feed(" hm </think>\\n<tool_call>{}</tool_call>"), s.feed("<|im_end|>\\n<|im_start|>assistant\\n<think>")
    ((' hm </think>\\n<tool_call>{}</tool_call>', ''), ('<|im_end|>\\n<|im_start|>assistant\\n<think>', ''))
    >>> s.feed(" ok </think> It is \\\\boxed{4}."), s.close()
    ((' ok </think>', ' It is \\\\boxed{4}.'), ('', ''))
    """

    TAGS: ClassVar[dict[str, dict[str, str]]] = {
        "think": {"</think>": "answer"},
        "answer": {"<tool_call>": "call", EOS: "tools", "<think>": "think"},
        "call": {"</tool_call>": "answer"},
        "tools": {"<|im_start|>assistant\n<think>": "think"},
    }

    def __init__(self, *, raw: bool) -> None:
        self.raw = raw
        self.state = "think"
        self._buffer = ""

    def feed(self, text: str) -> tuple[str, str]:
        """(reasoning, content) for the next piece of response text."""
        if self.raw:
            return "", text
        self._buffer += text
        reasoning, content = [], []
        while self._buffer:
            tags = self.TAGS[self.state]
            hit = min(((i, tag) for tag in tags if (i := self._buffer.find(tag)) >= 0), default=None)
            if hit is None:
                held = _held(self._buffer, tags, keep_space=self.state == "answer")
                ready, self._buffer = self._buffer[: len(self._buffer) - held], self._buffer[len(self._buffer) - held :]
                (content if self.state == "answer" else reasoning).append(ready)
                break
            at, tag = hit
            before = self._buffer[:at]
            if self.state == "answer" and before.strip():
                content.append(before)
            else:
                reasoning.append(before)
            reasoning.append(tag)
            self.state, self._buffer = tags[tag], self._buffer[at + len(tag) :]
        return "".join(reasoning), "".join(content)

    def close(self) -> tuple[str, str]:
        """Whatever was held back."""
        rest, self._buffer = self._buffer, ""
        return ("", rest) if self.state == "answer" and rest.strip() else (rest, "")


def _held(buffer: str, tags: dict[str, str], *, keep_space: bool) -> int:
    """How much of ``buffer``'s end to hold back: a partial tag, and (``keep_space``) the white space before it."""
    held = next((n for n in range(min(len(buffer), max(map(len, tags))), 0, -1)
                 if any(t.startswith(buffer[-n:]) for t in tags)), 0)  # fmt: skip
    if keep_space:
        body = buffer[: len(buffer) - held]
        held += len(body) - len(body.rstrip())
    return held


def splitter(protocol: Protocol, *, raw: bool) -> ReasoningSplitter | ToolTurnSplitter:
    """The reasoning/content router for ``protocol``'s text (ReSearch and Search-R1 answer in ``<answer>``)."""
    return ToolTurnSplitter(raw=raw) if protocol.name == "recall" else ReasoningSplitter(raw=raw)
