"""The streaming tag parser, query extraction and the result block."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from research.protocol import SEARCH_STOP, Segment, TagParser, extract_query, format_result, parse
from research.protocol.tags import merge
from research.retrieval import Passage

TRACE = (
    "<think> I need the capital. </think> <search> capital of France </search>"
    ' <result>\n"Paris"\nParis is the capital.\n</result> <think> Found. </think>'
    r" <answer> The final answer is \[ \boxed{Paris} \] </answer>"
)


def kinds(segments: list[Segment]) -> list[tuple[str, str, bool]]:
    return [(s.kind, s.text, s.tag) for s in segments]


def test_a_full_trace_parses_into_typed_regions_in_order():
    segments = parse(TRACE)
    assert [(s.kind, s.text) for s in segments if s.tag] == [
        ("think", "<think>"), ("think", "</think>"),
        ("search", "<search>"), ("search", "</search>"),
        ("result", "<result>"), ("result", "</result>"),
        ("think", "<think>"), ("think", "</think>"),
        ("answer", "<answer>"), ("answer", "</answer>"),
    ]  # fmt: skip
    assert [s.text for s in segments if s.kind == "search" and not s.tag] == [" capital of France "]
    assert "".join(s.text for s in segments) == TRACE


def test_text_outside_regions_is_kept_as_text():
    assert kinds(parse("hi <think>x</think> bye")) == [
        ("text", "hi ", False), ("think", "<think>", True), ("think", "x", False),
        ("think", "</think>", True), ("text", " bye", False),
    ]  # fmt: skip


def test_a_tag_split_across_deltas_is_held_back_until_complete():
    parser = TagParser()
    assert parser.feed("abc <se") == [Segment("text", "abc ")]
    assert parser.feed("arch") == []
    assert parser.feed("> q </") == [Segment("search", "<search>", tag=True), Segment("search", " q ")]
    assert parser.feed("search>") == [Segment("search", "</search>", tag=True)]


def test_a_stray_closing_tag_outside_its_region_is_plain_text():
    assert TagParser().feed("abc </se") == [Segment("text", "abc </se")]


def test_an_opening_tag_switches_region_when_the_model_forgot_to_close():
    assert [s.kind for s in parse("<think> a <search>q</search>") if s.tag] == ["think", "search", "search"]


def test_inside_a_result_only_its_closing_tag_counts():
    segments = parse("<result>a <think> b</result>")
    assert kinds(segments)[1] == ("result", "a <think> b", False)


def test_close_flushes_a_trailing_partial_tag_as_text():
    parser = TagParser()
    assert parser.feed("x <ans") == [Segment("text", "x ")]
    assert parser.close() == [Segment("text", "<ans")]


PIECES = st.sampled_from(
    ["<think>", "</think>", "<search>", "</search>", "<result>", "</result>", "<answer>", "</answer>",
     "<", "</", "<th", "</sea", ">", " ", "\n", "a", "q?", "\\boxed{x}", "<b>", "é", "<<"]
)  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(pieces=st.lists(st.one_of(PIECES, st.text(max_size=5)), max_size=30), data=st.data())
def test_any_split_of_any_interleaving_gives_the_one_shot_parse(pieces, data):
    text = "".join(pieces)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(text)), max_size=12)))
    parser, streamed = TagParser(), []
    for start, end in zip([0, *cuts], [*cuts, len(text)], strict=True):
        streamed += parser.feed(text[start:end])
    streamed += parser.close()
    assert "".join(s.text for s in streamed) == text  # nothing lost, nothing duplicated
    assert merge(streamed) == parse(text)


def test_the_query_is_between_the_last_search_and_the_stop():
    assert extract_query("<search> a </search> <result>r</result> <search>  b c \n</search>") == "b c"
    assert extract_query("<search> </search>") == ""
    assert extract_query("no search here" + SEARCH_STOP) is None


def test_the_result_block_is_byte_exact():
    passages = [Passage("1", '"A"\nfirst'), Passage("2", '"B"\nsecond  \n')]
    assert format_result(passages) == ' <result>\n"A"\nfirst\n\n"B"\nsecond\n</result>'
    assert format_result([]) == " <result>\n\n</result>"
