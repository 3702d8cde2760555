r"""The protocols' public face (``get_protocol``) and the traps of each reference, spelled out.

``test_reference_cases.py`` compares every function with the references' own outputs on 900
generated cases; these tests name the behaviours a reader would not guess.
"""

from __future__ import annotations

import json

import pytest

from research.protocol import PROTOCOL_NAMES, get_protocol, render_prompt
from research.protocol.recall import SEARCH_SCHEMA, read_call
from research.protocol.search_r1 import INVALID_ACTION
from research.testbed.models import load_tokenizer

SEARCH_R1, RECALL, RESEARCH = (get_protocol(n) for n in ("search-r1", "recall", "research"))


def test_protocols_are_named_and_an_unknown_name_lists_the_choices():
    assert PROTOCOL_NAMES == ("research", "search-r1", "recall")
    assert [get_protocol(n).name for n in PROTOCOL_NAMES] == list(PROTOCOL_NAMES)
    with pytest.raises(ValueError, match="unknown protocol 'searchr1'; choose one of research, search-r1, recall"):
        get_protocol("searchr1")


def test_research_is_todays_protocol_byte_for_byte():
    tok = load_tokenizer()
    for template in ("base", "instruct"):
        assert RESEARCH.render_prompt("Who?", template, tok) == render_prompt("Who?", template, tok)
    with pytest.raises(ValueError, match="no tool schemas"):
        RESEARCH.render_prompt("Who?", "base", tools=[SEARCH_SCHEMA])


def test_search_r1_normalises_the_question_and_renders_through_the_chat_template():
    base = SEARCH_R1.render_prompt("\u00a0who wrote it\uff1f ", "base")
    assert base.endswith("Question: who wrote it\uff1f?\n")  # stripped, then "?" after anything but "?"
    chat = SEARCH_R1.render_prompt("who wrote it", "instruct", load_tokenizer())
    assert chat.startswith("<|im_start|>system\nYou are Qwen") and chat.endswith("<|im_start|>assistant\n")
    assert SEARCH_R1.render_prompt("who wrote it", "base") in chat  # make_prefix's text as the one user turn


def test_search_r1_blocks_answers_and_reward():
    assert SEARCH_R1.format_result(['"A"\nfirst\nsecond', "B"]) == (
        '\n\n<information>Doc 1(Title: "A") first\nsecond\nDoc 2(Title: B)</information>\n\n'
    )
    step = SEARCH_R1.next_step("<think> x </think> <search> a <search> b </search>", "stop")
    assert step.calls[0].query == "a <search> b"  # the first <search>...</search>, as training parsed it
    assert SEARCH_R1.next_step("no tags", "eos").notice == INVALID_ACTION
    assert SEARCH_R1.next_step("no tags", "eos").drop_eos
    assert SEARCH_R1.next_step("<answer> x </answer>", "stop").done
    assert SEARCH_R1.extract_answer("<answer> a </answer> <answer> b </answer>") == "b"
    assert SEARCH_R1.extract_answer("no answer") is None
    # The reference scores prompt + response: with no answer of its own, the prompt's example is the answer.
    assert SEARCH_R1.reward("no answer", "Beijing", eos_token="<|im_end|>") == 1.0
    assert SEARCH_R1.reward("<answer> the  Beijing! </answer>", ["x", "beijing"], eos_token="<|im_end|>") == 1.0


def test_recall_prompts_tools_as_the_reference_dumps_them():
    tools = [SEARCH_SCHEMA, {"type": "function", "function": {"name": "café", "parameters": {}}}]
    prompt = RECALL.render_prompt("Who?", "instruct", tools=tools)
    assert json.dumps(tools, indent=4) in prompt and "caf\\u00e9" in prompt
    assert "one or more functions. \nHere are" in prompt and "\\boxed{} with latex" in prompt
    assert prompt.endswith("<|im_start|>user\nWho?<|im_end|>\n<|im_start|>assistant\n<think>")
    assert RECALL.render_prompt("Who?", "base") == RECALL.render_prompt("Who?", "instruct", tools=[SEARCH_SCHEMA])


@pytest.mark.parametrize(
    ("call", "reply"),
    [
        ("not json", "Parse tool call failed: Expecting value: line 1 column 1 (char 0)"),
        ('{"arguments": {}}', "Parse tool call failed: 'name'"),
        ('{"name": "calc", "arguments": {"x": 1}}', "error: \nname 'calc' is not defined"),
        ('{"name": "wikipedia_search", "arguments": {}}', "error: \nwikipedia_search() missing 1 required"),
        ('{"name": "wikipedia_search", "arguments": {"query": ""}}', "result: \ninvalid query"),
        ('{"name": "wikipedia_search", "arguments": {"class": "x"}}', "error: \ninvalid syntax"),
    ],
)
def test_recall_answers_a_bad_call_with_the_reference_sandboxs_text(call, reply):
    assert read_call(call).query is None and read_call(call).reply.startswith(reply)


def test_recall_runs_good_calls_as_searches_and_writes_a_tool_turn():
    calls = ['{"name": "wikipedia_search", "arguments": {"query": "q", "top_n": 2}}', "oops"]
    step = RECALL.next_step(f"<think> x </think><tool_call>{calls[0]}</tool_call> <tool_call> oops </tool_call>", "eos")
    assert [(c.query, c.k) for c in step.calls] == [("q", 2), (None, None)]
    reply = RECALL.reply(step, [['"A"\ntext', '"B"\nmore'], None])
    assert reply == (
        f'\n<|im_start|>user\n<tool_response>{calls[0]}\nresult: \n"A"\ntext\n\n"B"\nmore\n</tool_response>\n'
        f"<tool_response>oops\n{step.calls[1].reply}\n</tool_response>\n<|im_end|>\n<|im_start|>assistant\n<think>"
    )
    assert RECALL.next_step("<think> x </think> The answer is \\boxed{y}.", "eos").done
    assert RECALL.next_step("<tool_call>{}</tool_call>", "turn_limit").done  # a cut turn ends the rollout


def test_recall_reads_the_answer_of_the_last_whole_turn():
    response = "a </think><tool_call>{}</tool_call><|im_end|>\n<|im_start|>user\nr<|im_end|>\n"
    response += "<|im_start|>assistant\n<think>"
    final = " b </think> so \\[ \\boxed{Paris} \\].<|im_end|>"
    assert RECALL.extract_answer(response + final) == "Paris"
    assert RECALL.extract_answer(response + " unfinished") == ""  # the last complete turn has no box
    assert RECALL.reward(response + final, "Paris", eos_token="<|im_end|>") == 0.0  # {} lacks "name"/"arguments"
    good = response.replace("{}", '{"name": "f", "arguments": {}}')
    assert RECALL.reward(good + final, "Paris", eos_token="<|im_end|>") == 1.0
    assert RECALL.reward(good + final, "Rome", eos_token="<|im_end|>") == 0.1
    assert RECALL.reward(good + final[: -len("<|im_end|>")], "Paris", eos_token="<|im_end|>") == 0.0
