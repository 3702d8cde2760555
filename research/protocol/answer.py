r"""Answer extraction and the format check of a ReSearch response.

Both reproduce the reference reward code, ``re_search.py`` under
``src/verl/utils/reward_score/`` on the ``re-search`` branch of Agent-RL/ReCall, which
the released checkpoints were trained with (and which its evaluation pipeline reuses).
Where the paper's prose is looser, this code follows the reference:

* the format check looks only at tags (``<think>`` pairs, one ``<answer>`` block with a
  ``\boxed{`` and a ``}`` in it, every ``<search>`` followed in order by ``</search>``,
  ``<result>``, ``</result>``, scanning forward); stray ``</search>``/``<result>`` tags
  elsewhere pass, as they do there. Whether generation ended with EOS is the reward's
  next, separate check (:func:`research.protocol.metrics.reward`);
* the answer is the last box of the first ``<answer>...</answer>``: ``\boxed `` with a
  space anywhere takes the text after the last ``\boxed `` (up to a ``$``); otherwise the
  brace-matched box at the last ``\boxed``, which must be ``\boxed{...}`` and closed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_BOXED = "\\boxed{"
_BOXED_SPACE = "\\boxed "
CHAT_MARKER = "<|im_start|>assistant\n"
"""Where an instruct response starts in the decoded prompt + response."""
BASE_MARKER = "Assistant:"
"""Where a base-template response starts (the base prompt ends with it)."""


def response_text(prompt: str, completion: str) -> str:
    """The response as the reference reward reads it from the decoded prompt + completion.

    It splits the whole text at the assistant marker (the chat one if present anywhere,
    else ``Assistant:``) and takes the second piece: the completion up to any later
    marker. Without a marker (another template) the completion is the response.

    >>> response_text("User: Q. Assistant:", " <think> a </think> Assistant: b")
    ' <think> a </think> '
    """
    text = prompt + completion
    parts = text.split(CHAT_MARKER if CHAT_MARKER in text else BASE_MARKER)
    return parts[1] if len(parts) > 1 else completion


def last_boxed(text: str) -> str | None:
    r"""The content of the last box in ``text``, as the reference reads it; None if it has none.

    >>> last_boxed(r"\boxed{a} then \boxed{\frac{1}{2}}")
    '\\frac{1}{2}'
    >>> last_boxed(r"\boxed{a} \boxed{unclosed") is None
    True
    >>> last_boxed(r"\boxed Paris $ or so")
    'Paris '
    """
    if _BOXED_SPACE in text:
        return text.split(_BOXED_SPACE)[-1].split("$")[0]
    start = text.rfind("\\boxed")
    if start < 0:
        return None
    depth = 0
    for i in range(start, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                # The brace-matched span must be a \boxed{...} (not "\boxedx{...}" or "\boxed}{").
                return text[start + len(_BOXED) : i] if text.startswith(_BOXED, start) else None
    return None


def extract_answer(response: str) -> str | None:
    r"""The final answer of ``response`` (its last box, stripped), or None when it gave none.

    >>> extract_answer(r"<think>..</think> <answer> The final answer is \[ \boxed{ Paris} \] </answer>")
    'Paris'
    """
    match = _ANSWER.search(response)
    boxed = last_boxed(match.group(1)) if match else None
    return boxed.strip() if boxed is not None else None


@dataclass(frozen=True, slots=True)
class FormatCheck:
    """Verdict of :func:`check_format`; ``reason`` says what is wrong, if anything."""

    ok: bool
    reason: str

    def __bool__(self) -> bool:
        return self.ok


def _search_blocks_in_order(response: str) -> FormatCheck | None:
    """The reference's forward scan: each ``<search>`` needs ``</search>``, ``<result>``, ``</result>`` after it."""
    pos = 0
    while (search := response.find("<search>", pos)) >= 0:
        result = response.find("<result>", search)
        search_end = response.find("</search>", search)
        result_end = response.find("</result>", result) if result >= 0 else -1
        if -1 in (result, search_end, result_end):
            return FormatCheck(False, f"the <search> at character {search} has no </search>, <result> and </result>")
        if not search < search_end < result < result_end:
            return FormatCheck(False, f"the <search> at character {search} is closed after its <result>")
        pos = result_end
    return None


def check_format(response: str) -> FormatCheck:
    r"""Whether ``response`` is well-formed, by the reference's rules and in its order.

    ``<think>``/``</think>`` counts equal and non-zero; exactly one ``<answer>`` and one
    ``</answer>``; every ``<search>`` followed, scanning forward, by ``</search>``,
    ``<result>``, ``</result>`` in that order; ``<answer>`` before ``</answer>``; and the
    answer holds ``\boxed{`` and a ``}``. EOS is not looked at here (see ``reward``).

    >>> bool(check_format(r"<think>a</think> <answer>\boxed{x}</answer>"))
    True
    >>> check_format("<think>a</think>").reason
    'needs exactly one <answer> and one </answer> (found 0 and 0)'
    """
    opens, closes = response.count("<think>"), response.count("</think>")
    if opens != closes:
        return FormatCheck(False, f"<think> and </think> are not paired ({opens} and {closes})")
    if opens == 0:
        return FormatCheck(False, "no <think> </think> pair")
    answers, answer_ends = response.count("<answer>"), response.count("</answer>")
    if answers != 1 or answer_ends != 1:
        return FormatCheck(False, f"needs exactly one <answer> and one </answer> (found {answers} and {answer_ends})")
    if (bad := _search_blocks_in_order(response)) is not None:
        return bad
    start, end = response.find("<answer>"), response.find("</answer>")
    if start > end:
        return FormatCheck(False, "</answer> comes before <answer>")
    if _BOXED not in response[start:end] or "}" not in response[start:end]:
        return FormatCheck(False, "the answer has no \\boxed{}")
    return FormatCheck(True, "well-formed")
