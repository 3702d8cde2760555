"""ReSearch (arXiv 2503.19470, Agent-RL/ReCall branch ``re-search``): the default protocol.

``<search> q </search>`` stops the turn; the passages come back as `` <result>\\n...\\n</result>``;
the answer is the last ``\\boxed{}`` of ``<answer>``. The pieces live in :mod:`~research.protocol.templates`,
:mod:`~research.protocol.tags`, :mod:`~research.protocol.answer` and :mod:`~research.protocol.metrics`;
this class is their face as a :class:`~research.protocol.profile.Protocol`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from research.protocol import answer, metrics, tags, templates
from research.protocol.profile import DONE, Call, Protocol, Step, TurnEnd
from research.protocol.templates import ChatTokenizer, TemplateName
from research.wire import DEFAULT_K, Passage


class ReSearch(Protocol):
    name = "research"
    stop = (tags.SEARCH_STOP,)
    default_k = DEFAULT_K

    def _render(self, question: str, template: TemplateName, tokenizer: ChatTokenizer | None, tools: Any) -> str:
        return templates.render_prompt(question, template, tokenizer)

    def format_result(self, passages: Sequence[Passage] | Sequence[str]) -> str:
        return tags.format_result(passages)

    def extract_answer(self, response: str) -> str | None:
        return answer.extract_answer(response)

    def reward(self, response: str, gold: str | Sequence[str], *, eos_token: str) -> float:
        """The reference reads the response out of prompt + response at the assistant marker (see
        :func:`~research.protocol.answer.response_text`): the chat one for instruct models (whose EOS is
        ``<|im_end|>``), ``Assistant:`` for base ones."""
        marker = answer.CHAT_MARKER if eos_token == "<|im_end|>" else answer.BASE_MARKER
        return metrics.reward(answer.response_text(marker, response), gold, eos_token=eos_token)

    def well_formed(self, response: str) -> bool:
        return bool(answer.check_format(response))

    def next_step(self, turn: str, ended: TurnEnd) -> Step:
        """A search when the turn stopped at ``</search>``: the query after the last ``<search>``."""
        if ended != "stop":
            return DONE
        return Step([Call(turn, query=tags.extract_query(turn) or "")])

    def reply(self, step: Step, found: Sequence[list[Passage] | None]) -> str:
        """The result block; an empty query gets the reference pipeline's ``nothing to search``."""
        (call,), (passages,) = step.calls, found
        return tags.format_result(passages if call.query else [tags.EMPTY_QUERY_RESULT])
