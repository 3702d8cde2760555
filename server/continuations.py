"""Turns waiting for the client's function results, remembered so that the next request continues them exactly.

When a ReCall model calls one of the client's functions, the reply ends with ``tool_calls``
and the client sends the conversation back with its results. The model's turn (its thinking,
its calls, the server's own searches of the turn) is in no standard message field, so the
server keeps it: the ids through the turn's end and the turn's calls, under each call's id.
A request whose last messages answer those calls, after the same prompt, continues from
the kept ids; any other (another replica, a restart, an edited conversation) is rendered
from the messages (:mod:`research.server.render`).
"""

from __future__ import annotations

import threading
from array import array
from collections import OrderedDict
from dataclasses import dataclass

from research.protocol.loop import Pending


@dataclass(frozen=True, slots=True)
class Continuation:
    ids: array[int]
    """The prompt and the turn, through its end-of-sequence token (4 bytes a token)."""
    prompt: int
    """``hash`` of the prompt ids the turn followed (a request must render the same prompt to continue it)."""
    pending: Pending
    calls: dict[str, int]
    """The client's tool-call ids, each with the index of its call in the turn."""


class Continuations:
    """The last ``capacity`` turns that called the client's functions, by their tool-call ids (thread-safe:
    prompts are rendered off the event loop). A turn of 8,192 tokens takes 32 KiB: 1,024 of them at most 32 MiB."""

    def __init__(self, capacity: int = 1024) -> None:
        self.capacity = capacity
        self._turns: OrderedDict[frozenset[str], Continuation] = OrderedDict()
        self._lock = threading.Lock()

    def remember(self, continuation: Continuation) -> None:
        with self._lock:
            self._turns[frozenset(continuation.calls)] = continuation
            while len(self._turns) > self.capacity:
                self._turns.popitem(last=False)

    def find(self, call_ids: list[str], prompt_ids: list[int]) -> Continuation | None:
        """The turn that made exactly ``call_ids`` after ``prompt_ids``, if it is still remembered."""
        with self._lock:
            found = self._turns.get(frozenset(call_ids))
        return found if found is not None and found.prompt == hash(tuple(prompt_ids)) else None
