"""Conversations with the client's own functions (the ReCall protocol): checked, and rendered as the model saw them.

A reply that ended with ``tool_calls`` comes back as the assistant message holding the calls,
then one ``tool`` message per call with its result. The turn that made the calls continues
from the server's record of it (:mod:`research.server.continuations`) when it has one:
the model's own ids, and the server's searches of that turn beside the client's results, in
call order, exactly as the loop would have gone on. Without one, the turn is rebuilt from
the message: its calls and its content (the model's thinking and the turn's searches are
gone). Earlier exchanges in the history are rendered from the messages too.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from research.http_errors import APIError
from research.protocol import Protocol
from research.protocol.recall import EOS
from research.server.continuations import Continuations
from research.server.requests import Message, MessageToolCall


def check_tool_messages(messages: Sequence[Message]) -> None:
    """Every ``tool`` message answers a call of the assistant message before its run, and every call is answered."""
    for i, message in enumerate(messages):
        if message.role == "tool":
            asked = next((m for m in reversed(messages[:i]) if m.role != "tool"), None)
            ids = [c.id for c in (asked.tool_calls or [])] if asked and asked.role == "assistant" else []
            if message.tool_call_id not in ids:
                raise APIError(
                    400, f"messages.{i}: tool_call_id {message.tool_call_id!r} answers no tool call of the assistant "
                    "message before it", param=f"messages.{i}.tool_call_id", code="invalid_value",
                )  # fmt: skip
    for i, message in enumerate(messages):
        for j, call in enumerate(message.tool_calls or []):
            try:
                arguments = json.loads(call.function.arguments)
            except json.JSONDecodeError as e:
                arguments = e
            if not isinstance(arguments, dict):
                raise APIError(
                    400, f"messages.{i}.tool_calls.{j}: the arguments are not a JSON object",
                    param=f"messages.{i}.tool_calls.{j}.function.arguments", code="invalid_value",
                )  # fmt: skip
            answered = any(m.role == "tool" and m.tool_call_id == call.id for m in _run_after(messages, i))
            if not answered:
                raise APIError(
                    400, f"the tool call {call.id!r} of messages.{i} has no tool message with its result",
                    param=f"messages.{i}.tool_calls.{j}.id", code="invalid_value",
                )  # fmt: skip


def _run_after(messages: Sequence[Message], i: int) -> list[Message]:
    """The ``tool`` messages right after message ``i``."""
    run = []
    for message in messages[i + 1 :]:
        if message.role != "tool":
            break
        run.append(message)
    return run


def call_text(call: MessageToolCall) -> str:
    """A call as the model writes it: ``{"name": ..., "arguments": {...}}``."""
    return json.dumps({"name": call.function.name, "arguments": json.loads(call.function.arguments)})


def history(messages: Sequence[Message]) -> str:
    """Earlier turns in ChatML: assistant turns with their calls, each run of tool results one user turn."""
    out, calls = [], {}
    for i, message in enumerate(messages):
        if message.role == "assistant":
            calls |= {c.id: call_text(c) for c in message.tool_calls or []}
            out.append(f"<|im_start|>assistant\n{message.text}{_calls(message)}{EOS}\n")
        elif message.role == "tool":
            if i == 0 or messages[i - 1].role != "tool":
                out.append("<|im_start|>user\n")
            out.append(f"<tool_response>{calls[message.tool_call_id or '']}\n{message.text}\n</tool_response>\n")
            if i + 1 == len(messages) or messages[i + 1].role != "tool":
                out.append(f"{EOS}\n")
        else:
            out.append(f"<|im_start|>{message.role}\n{message.text}{EOS}\n")
    return "".join(out)


def _calls(message: Message) -> str:
    return "".join(f"\n<tool_call>\n{call_text(c)}\n</tool_call>" for c in message.tool_calls or [])


def continued_ids(
    messages: Sequence[Message],
    render: Callable[[Sequence[Message]], list[int]],
    tokenizer: Any,
    protocol: Protocol,
    continuations: Continuations | None,
) -> list[int]:
    """Token ids of a conversation ending with the results of the last assistant message's calls.

    ``render(messages)`` gives the ids of the conversation before that assistant message.
    """
    start = len(messages)
    while messages[start - 1].role == "tool":
        start -= 1
    asked = messages[start - 1]
    calls = asked.tool_calls or []
    results = {m.tool_call_id or "": m.text for m in messages[start:]}  # every call answered: check_tool_messages
    before = render(messages[: start - 1])
    found = continuations.find([c.id for c in calls], before) if continuations else None
    if found is not None:
        by_place = {found.calls[call_id]: result for call_id, result in results.items()}
        return [*found.ids, *tokenizer.encode(found.pending.reply(protocol, by_place), add_special_tokens=False)]
    content = f" {asked.text.strip()}" if asked.text.strip() else ""
    turn = f" </think>{content}{_calls(asked)}{EOS}"  # the prompt before it opened the turn with <think>
    reply = protocol.format_tool_results([call_text(c) for c in calls], [results[c.id] for c in calls])
    return before + tokenizer.encode(turn + reply, add_special_tokens=False)
