"""Answer extraction and the format check."""

from __future__ import annotations

import pytest

from research.protocol import check_format, extract_answer, last_boxed

GOOD = (
    "<think> a </think> <search> q </search> <result>\nr\n</result> <think> b </think>"
    r" <answer> The final answer is \[ \boxed{Paris} \] </answer>"
)


def test_the_answer_is_the_last_boxed_in_the_answer_block():
    assert extract_answer(r"<answer> \boxed{a} or rather \boxed{ b } </answer>") == "b"


def test_nested_braces_survive():
    assert extract_answer(r"<answer>\boxed{\text{New {York}} City}</answer>") == r"\text{New {York}} City"


def test_boxed_outside_the_answer_block_does_not_count():
    assert extract_answer(r"<think>\boxed{x}</think> <answer>no box</answer>") is None
    assert extract_answer(r"\boxed{x}") is None


def test_an_unclosed_answer_or_box_gives_none():
    assert extract_answer(r"<answer>\boxed{x}") is None
    assert last_boxed(r"\boxed{x") is None


def test_a_protocol_following_response_is_well_formed():
    assert check_format(GOOD, ended_with_eos=True)


@pytest.mark.parametrize(
    ("response", "reason"),
    [
        (GOOD.replace("</think>", "", 1), "not balanced"),
        (r"<answer>\boxed{x}</answer>", "no <think>"),
        (GOOD + " <answer>again</answer>", "exactly one"),
        (GOOD.replace(r"\boxed{Paris}", "Paris"), "boxed"),
        (GOOD.replace(" <result>\nr\n</result>", ""), "search/result"),
        (GOOD.replace("</search>", "", 1), "search/result"),
        ("<think>a</think> </answer><answer>\\boxed{x}", "comes before"),
    ],
)
def test_each_format_violation_is_named(response, reason):
    check = check_format(response, ended_with_eos=True)
    assert not check and reason in check.reason


def test_a_response_cut_by_the_budget_is_not_well_formed():
    assert check_format(GOOD, ended_with_eos=False).reason == "the response did not end with EOS"
