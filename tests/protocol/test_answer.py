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
    # The last \boxed decides, as in the reference: an unclosed or bare one hides earlier boxes.
    assert extract_answer(r"<answer>\boxed{a} \boxed{b</answer>") is None
    assert extract_answer(r"<answer>\boxed{a} \boxed</answer>") is None


def test_a_box_with_a_space_takes_the_text_after_it():
    assert extract_answer(r"<answer>\boxed{a} \boxed Paris $x$</answer>") == "Paris"


def test_a_protocol_following_response_is_well_formed():
    assert check_format(GOOD)
    assert check_format(GOOD + "<|im_end|>")  # the EOS text is the reward's business, not the format's


def test_stray_search_and_result_tags_pass_as_in_the_reference():
    assert check_format(GOOD.replace(" <answer>", " </search> <result> <answer>"))


@pytest.mark.parametrize(
    ("response", "reason"),
    [
        (GOOD.replace("</think>", "", 1), "not paired"),
        (r"<answer>\boxed{x}</answer>", "no <think>"),
        (GOOD + " <answer>again</answer>", "exactly one"),
        (GOOD.replace(r"\boxed{Paris}", "Paris"), "boxed"),
        (GOOD.replace(" <result>\nr\n</result>", ""), "has no </search>, <result> and </result>"),
        (GOOD.replace("</search>", "", 1), "has no </search>"),
        (GOOD.replace("</search> <result>", "<result> </search>"), "closed after its <result>"),
        ("<think>a</think> </answer><answer>\\boxed{x}", "comes before"),
    ],
)
def test_each_format_violation_is_named(response, reason):
    check = check_format(response)
    assert not check and reason in check.reason
