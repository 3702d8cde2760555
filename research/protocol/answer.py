"""Answer extraction and the format check of a ReSearch response.

Both follow the reference reward code: the answer is the content of the last
``\\boxed{...}`` (braces may nest) inside the first ``<answer>...</answer>``;
a response is well-formed when its tags obey the protocol and it ended with EOS.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_BOXED = "\\boxed{"
_SEARCH_RESULT_TAGS = re.compile(r"</?(?:search|result)>")


def last_boxed(text: str) -> str | None:
    r"""The content of the last complete ``\boxed{...}`` in ``text``.

    >>> last_boxed(r"\boxed{a} then \boxed{\frac{1}{2}}")
    '\\frac{1}{2}'
    >>> last_boxed(r"\boxed{unclosed") is None
    True
    """
    start = text.rfind(_BOXED)
    if start < 0:
        return None
    depth = 0
    for i in range(start + len(_BOXED) - 1, len(text)):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return text[start + len(_BOXED) : i]
    return None


def extract_answer(response: str) -> str | None:
    r"""The final answer of ``response`` (the box's content, stripped), or None when it gave none.

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


def check_format(response: str, *, ended_with_eos: bool) -> FormatCheck:
    r"""Whether ``response`` (the generated text, EOS token excluded) is well-formed.

    Well-formed: ``<think>``/``</think>`` balanced with at least one pair; exactly one
    ``<answer>`` and one ``</answer>``, in that order, holding ``\boxed{``; every
    ``<search>`` followed, in order, by ``</search>``, ``<result>``, ``</result>``;
    and generation ended with EOS (not the token budget).

    >>> bool(check_format(r"<think>a</think> <answer>\boxed{x}</answer>", ended_with_eos=True))
    True
    >>> check_format("<think>a</think>", ended_with_eos=True).reason
    'needs exactly one <answer> and one </answer>'
    """
    opens, closes = response.count("<think>"), response.count("</think>")
    if opens != closes:
        return FormatCheck(False, "<think> and </think> are not balanced")
    if opens == 0:
        return FormatCheck(False, "no <think> </think> pair")
    if response.count("<answer>") != 1 or response.count("</answer>") != 1:
        return FormatCheck(False, "needs exactly one <answer> and one </answer>")
    start, end = response.find("<answer>"), response.find("</answer>")
    if start > end:
        return FormatCheck(False, "</answer> comes before <answer>")
    if _BOXED not in response[start:end]:
        return FormatCheck(False, "the answer has no \\boxed{}")
    tags = _SEARCH_RESULT_TAGS.findall(response)
    if tags != ["<search>", "</search>", "<result>", "</result>"] * (len(tags) // 4):
        return FormatCheck(False, "search/result tags are incomplete or out of order")
    if not ended_with_eos:
        return FormatCheck(False, "the response did not end with EOS")
    return FormatCheck(True, "well-formed")
