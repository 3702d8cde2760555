"""What a search protocol is: the data and small functions that make one checkpoint family's dialect.

A :class:`Protocol` says how a prompt is rendered, where the model hands control to the
environment (its stop strings, or the end of its turn), what it asked for there
(:meth:`Protocol.next_step`), what text goes back (:meth:`Protocol.reply`), and how the
answer is read and rewarded. The search loop (:mod:`research.protocol.loop`) drives any of
them the same way, on token ids. The families are one module each: ReSearch
(:mod:`~research.protocol.re_search`), Search-R1 (:mod:`~research.protocol.search_r1`) and
ReCall (:mod:`~research.protocol.recall`); :func:`research.protocol.get_protocol` names them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from research.protocol.templates import ChatTokenizer, TemplateName
from research.wire import Passage

TurnEnd = Literal["stop", "eos", "turn_limit"]
"""How the model's turn ended: at one of the protocol's stop strings, at an end-of-sequence
token, or at the protocol's own per-turn token cap (the response budget is the loop's)."""


@dataclass(frozen=True, slots=True)
class Call:
    """One request the model made in its turn, as the protocol read it.

    ``query`` is set for a search the server runs (``k`` passages; None: the loop's default);
    otherwise ``reply`` is already the text that goes back (a malformed call, an unknown tool).
    ``text`` is the call as the model wrote it (what a tool response quotes); ``name`` and
    ``arguments`` are set for a well-formed call of a function the server does not run (one
    of the client's, when the request brought it).
    """

    text: str
    query: str | None = None
    k: int | None = None
    reply: str | None = None
    name: str | None = None
    arguments: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Step:
    """What the environment does after a turn: run ``calls``, insert ``notice``, or nothing (``done``)."""

    calls: list[Call] = field(default_factory=list)
    notice: str | None = None
    drop_eos: bool = False
    """Remove the turn's end-of-sequence token before the insertion (the reference trained without it)."""

    @property
    def done(self) -> bool:
        return not self.calls and self.notice is None


DONE = Step()


class Protocol(ABC):
    """A search-agent dialect. Subclasses are stateless: one instance serves every request."""

    name: ClassVar[str]
    stop: ClassVar[tuple[str, ...]]
    """Stop strings that end a turn and hand control to the environment (kept in the output)."""
    default_k: ClassVar[int]
    """Passages per search, as the family was trained."""
    max_turn_tokens: ClassVar[int | None] = None
    """Tokens one turn may generate (the reference's per-turn cap), None: only the response budget."""
    max_reply_tokens: ClassVar[int | None] = None
    """Tokens an inserted reply may take (the reference cuts longer ones), None: only the response budget."""
    eos_in_text: ClassVar[bool] = False
    """Whether a turn's end-of-sequence token is part of the text the model continues from (ChatML turns)."""
    takes_tools: ClassVar[bool] = False
    """Whether its prompt lists tool schemas (ReCall); the others know one tool, their search."""
    call_tags: ClassVar[tuple[str, str]] = ("<search>", "</search>")
    """The tags around a call the model writes (its search query; ReCall's JSON tool call)."""

    def inside_call(self, turn: str) -> bool:
        """Whether the model's ``turn`` ends inside a call it is writing (a client's stop string there is no stop).

        >>> from research.protocol import RESEARCH
        >>> RESEARCH.inside_call("I will look. <search> Paris"), RESEARCH.inside_call("<search> x </search> So")
        (True, False)
        """
        opened, closed = self.call_tags
        return turn.rfind(opened) > turn.rfind(closed)

    def render_prompt(
        self,
        question: str,
        template: TemplateName,
        tokenizer: ChatTokenizer | None = None,
        tools: Sequence[dict[str, Any]] | None = None,
    ) -> str:
        """The whole prompt for ``question`` as the family was trained on it (``tools``: the schemas it lists)."""
        if tools and not self.takes_tools:
            raise ValueError(f"the {self.name} protocol has one tool, its search; it takes no tool schemas")
        return self._render(question, template, tokenizer, tools)

    @abstractmethod
    def _render(self, question: str, template: TemplateName, tokenizer: ChatTokenizer | None, tools: Any) -> str:
        """:meth:`render_prompt` once ``tools`` are known to be allowed."""

    @abstractmethod
    def format_result(self, passages: Sequence[Passage] | Sequence[str]) -> str:
        """The text one search's passages become (each passage as its ``contents``: ``"Title"\\ntext``)."""

    @abstractmethod
    def extract_answer(self, response: str) -> str | None:
        """The final answer in ``response`` (the generated text, no prompt), as the reference's evaluation reads it."""

    @abstractmethod
    def reward(self, response: str, gold: str | Sequence[str], *, eos_token: str) -> float:
        """The reference's training reward of prompt + ``response`` (EOS text included where generated)."""

    @abstractmethod
    def well_formed(self, response: str) -> bool:
        """Whether ``response`` passes the reference's format check (where it has one)."""

    @abstractmethod
    def next_step(self, turn: str, ended: TurnEnd) -> Step:
        """What the environment does after the model's ``turn`` (its text since the last insertion)."""

    @abstractmethod
    def reply(self, step: Step, found: Sequence[list[Passage] | None]) -> str:
        """The text inserted after ``step``: its calls' results (``found[i]`` for a search call, else None)."""

    def format_tool_results(self, tool_calls: Sequence[str], results: Sequence[str]) -> str:
        """The turn of tool responses after a turn of tool calls (protocols with tool calls)."""
        raise NotImplementedError(f"the {self.name} protocol has no tool calls")

    def __repr__(self) -> str:
        return f"<protocol {self.name}>"
