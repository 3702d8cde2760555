r"""Search-R1 (PeterGriffinJin/Search-R1 at a14dc3a, checkpoints ``PeterJinGo/SearchR1-*``).

Byte for byte what its training code built (``scripts/data_process/nq_search.py``,
``search_r1/llm_agent/generation.py``, ``verl/utils/reward_score/qa_em.py``):

* the question is stripped and gets a ``?`` unless it ends with one; the prompt is
  ``make_prefix``'s, through the tokenizer's chat template as one user turn (``instruct``;
  training and ``infer.py`` do this whenever the tokenizer has a chat template, Qwen2.5 base
  tokenizers included), or the raw prefix (``base``: a tokenizer without one);
* a turn ends at ``</search>`` or ``</answer>`` (training cut each turn there, so the model
  never saw what follows, EOS included); the turn's action is the first
  ``<(search|answer)>...</same>`` in it; a search gets
  ``\n\n<information>{Doc i(Title: t) text lines}</information>\n\n`` (3 passages, at most
  500 tokens, as trained); a turn with neither gets the reference's "My previous action is
  invalid..." notice, its EOS dropped (the reference decoded without special tokens);
* the answer is the last ``<answer>...</answer>``, stripped; the reward is exact match of the
  answer the reference finds in prompt + response, where the prompt's own two examples count:
  with no answer in the response the reference scores the prompt's ``Beijing``.

Where ``infer.py`` differs (it generates past ``</answer>`` to EOS, quotes the model's text in
its block and takes the last ``<search>`` of the whole text), training is followed: it is what
the checkpoints learned.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from research.protocol.metrics import exact_match
from research.protocol.profile import DONE, Call, Protocol, Step, TurnEnd
from research.protocol.templates import ChatTokenizer, TemplateName, through_chat_template
from research.wire import Passage

PREFIX = (
    "Answer the given question. You must conduct reasoning inside <think> and </think> first every time you get "
    "new information. After reasoning, if you find you lack some knowledge, you can call a search engine by "
    "<search> query </search> and it will return the top searched results between <information> and "
    "</information>. You can search as many times as your want. If you find no further external knowledge needed, "
    "you can directly provide the answer inside <answer> and </answer>, without detailed illustrations. For "
    "example, <answer> Beijing </answer>. Question: {question}\n"
)
"""``make_prefix(dp, 'base')``; ``{question}`` is its only placeholder."""

INVALID_ACTION = (
    "\nMy previous action is invalid. If I want to search, I should put the query between <search> and </search>. "
    "If I want to give the final answer, I should put the answer between <answer> and </answer>. Let me try again.\n"
)
"""What the environment inserts after a turn that neither searched nor answered."""

_ACTION = re.compile(r"<(search|answer)>(.*?)</\1>", re.DOTALL)
_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_PROMPT_ANSWERS = PREFIX.split("Question:")[0]
"""The part of every prompt the reference's answer regex also reads (two ``<answer>`` pairs)."""


def normalize_question(question: str) -> str:
    """``nq_search.py``'s: stripped, and ``?`` appended unless it is the last character.

    >>> normalize_question("  who wrote hamlet  "), normalize_question('say "why?"')
    ('who wrote hamlet?', 'say "why?"?')
    """
    question = question.strip()
    return question if question.endswith("?") else question + "?"


def passages_to_string(passages: Sequence[Passage] | Sequence[str]) -> str:
    """``_passages2string``: ``Doc i(Title: first line) other lines\\n`` per passage, i from 1."""
    out = ""
    for i, passage in enumerate(passages, 1):
        title, *lines = (passage if isinstance(passage, str) else passage.contents).split("\n")
        out += f"Doc {i}(Title: {title}) {chr(10).join(lines)}\n"
    return out


class SearchR1(Protocol):
    name = "search-r1"
    stop = ("</search>", "</answer>")
    default_k = 3
    max_turn_tokens = 500
    max_reply_tokens = 500

    def _render(self, question: str, template: TemplateName, tokenizer: ChatTokenizer | None, tools: Any) -> str:
        prefix = PREFIX.replace("{question}", normalize_question(question))
        return prefix if template == "base" else through_chat_template([{"role": "user", "content": prefix}], tokenizer)

    def format_result(self, passages: Sequence[Passage] | Sequence[str]) -> str:
        return f"\n\n<information>{passages_to_string(passages).strip()}</information>\n\n"

    def extract_answer(self, response: str) -> str | None:
        matches = _ANSWER.findall(response)
        return matches[-1].strip() if matches else None

    def reward(self, response: str, gold: str | Sequence[str], *, eos_token: str) -> float:
        """``compute_score_em`` on prompt + response: EM of the last answer, no format or EOS check."""
        return exact_match(_ANSWER.findall(_PROMPT_ANSWERS + response)[-1].strip(), gold)

    def well_formed(self, response: str) -> bool:
        """The reference has no format check; a response counts as well-formed when it answers."""
        return self.extract_answer(response) is not None

    def next_step(self, turn: str, ended: TurnEnd) -> Step:
        action = _ACTION.search(turn)
        if action is None:
            return Step(notice=INVALID_ACTION, drop_eos=ended == "eos")
        if action.group(1) == "answer":
            return DONE
        return Step([Call(action.group(0), query=action.group(2).strip())])

    def reply(self, step: Step, found: Sequence[list[Passage] | None]) -> str:
        if step.notice is not None:
            return step.notice
        (passages,) = found
        return self.format_result(passages or [])
