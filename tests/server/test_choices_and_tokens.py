"""``n``, ``logprobs``, ``stop`` and the token ids with the inserted mask, read by the ``openai`` SDK from a live
server on every engine (the scripted model: at temperature 0.5 it follows its script, searching once)."""

from __future__ import annotations

import pytest
from openai import AsyncOpenAI

from research.protocol import RESEARCH, LoopLimits, SamplingOptions, render_prompt
from research.retrieval import BatchingRetriever
from research.train.rollout import rollout_batch
from tests.support.scripted import SCRIPT_ANSWER, SCRIPT_QUESTION

MODEL = "scripted"
ON_SCRIPT = {"temperature": 0.5, "max_tokens": 200}
"""Sampled (not greedy), yet the scripted model follows its script: one search, then the answer."""


@pytest.fixture
async def client(live):
    async with AsyncOpenAI(base_url=live.url, api_key="none", max_retries=0, timeout=300) as client:
        yield client


@pytest.fixture
async def local(live_transformers):
    async with AsyncOpenAI(base_url=live_transformers.url, api_key="none", max_retries=0, timeout=300) as client:
        yield client


def ask(question: str = SCRIPT_QUESTION) -> list[dict[str, str]]:
    return [{"role": "user", "content": question}]


async def test_each_of_n_choices_runs_its_own_search_loop(client):
    one = await client.chat.completions.create(model=MODEL, messages=ask(), seed=3, **ON_SCRIPT)
    three = await client.chat.completions.create(model=MODEL, messages=ask(), n=3, seed=3, **ON_SCRIPT)
    assert [c.index for c in three.choices] == [0, 1, 2]
    assert all(c.message.model_extra["answer"] == SCRIPT_ANSWER and c.finish_reason == "stop" for c in three.choices)
    usage = three.usage.model_extra
    assert usage["searches"] == 3 and usage["retrieved_tokens"] == 3 * one.usage.model_extra["retrieved_tokens"]
    assert three.usage.completion_tokens == 3 * one.usage.completion_tokens
    assert three.usage.prompt_tokens == one.usage.prompt_tokens  # the prompt counts once


async def test_streamed_choices_carry_their_index(local):
    whole = await local.chat.completions.create(model=MODEL, messages=ask(), n=2, seed=1, **ON_SCRIPT)
    stream = await local.chat.completions.create(
        model=MODEL, messages=ask(), n=2, seed=1, stream=True, stream_options={"include_usage": True}, **ON_SCRIPT
    )
    content, finished, usage = {0: "", 1: ""}, {}, None
    async for chunk in stream:
        for choice in chunk.choices:
            content[choice.index] += choice.delta.content or ""
            if choice.finish_reason:
                finished[choice.index] = choice.finish_reason
        usage = chunk.usage or usage
    assert content == {c.index: c.message.content for c in whole.choices} and finished == {0: "stop", 1: "stop"}
    assert usage is not None and usage.model_extra["searches"] == 2


async def test_seeded_choices_are_the_same_each_time_and_differ_from_each_other(local, tokenizer):
    """At temperature 1 the scripted model wanders: choice i's seed is the request's plus i."""
    ids = tokenizer.encode(render_prompt(SCRIPT_QUESTION, "instruct", tokenizer))
    asked = {"model": MODEL, "prompt": ids, "n": 3, "seed": 5, "temperature": 1.0, "max_tokens": 12}
    first = await local.completions.create(**asked, extra_body={"return_token_ids": True})
    again = await local.completions.create(**asked, extra_body={"return_token_ids": True})
    tokens = [c.model_extra["token_ids"] for c in first.choices]
    assert tokens == [c.model_extra["token_ids"] for c in again.choices]
    assert len({tuple(t) for t in tokens}) == 3


async def test_token_ids_and_mask_equal_the_trainers_rollouts_for_the_same_seed(live, client, tokenizer):
    """What an RL framework gets over HTTP is, token for token, what ``research-train``'s rollouts produce."""
    ids = tokenizer.encode(render_prompt(SCRIPT_QUESTION, "instruct", tokenizer))
    reply = await client.completions.create(
        model=MODEL, prompt=ids, n=2, seed=9, logprobs=0, extra_body={"return_token_ids": True}, **ON_SCRIPT
    )
    assert reply.model_extra["prompt_token_ids"] == ids
    retriever = BatchingRetriever(live.server.retriever.index)
    try:
        sampling = SamplingOptions(temperature=0.5, seed=9, logprobs=True)
        rollouts = await rollout_batch(
            live.engine, retriever, [ids, ids], limits=LoopLimits(max_tokens=200), sampling=sampling, protocol=RESEARCH
        )
    finally:
        await retriever.close()
    compared = 0
    for choice, traj in zip(reply.choices, rollouts, strict=True):
        extra = choice.model_extra
        assert extra["token_ids"] == traj.completion_ids
        assert extra["inserted_mask"] == [1 - m for m in traj.mask] and 0 in traj.mask
        assert [lp is None for lp in extra["token_logprobs"]] == [m == 0 for m in traj.mask]
        assert [lp for lp in extra["token_logprobs"] if lp is not None] == pytest.approx(
            [lp for lp in traj.logprobs or [] if lp is not None], abs=1e-4
        )
        compared += len(traj.completion_ids)
    assert compared > 100


async def test_chat_logprobs_list_every_model_token_once_and_no_inserted_one(client):
    reply = await client.chat.completions.create(
        model=MODEL, messages=ask(), logprobs=True, top_logprobs=2, **ON_SCRIPT
    )
    choice = reply.choices[0]
    content, reasoning = choice.logprobs.content, choice.logprobs.model_extra["reasoning"]
    assert len(content) + len(reasoning) == reply.usage.completion_tokens
    assert choice.message.content in "".join(t.token for t in content)
    assert "<result>" not in "".join(t["token"] for t in reasoning)
    assert all(len(t.top_logprobs) == 2 and t.logprob <= 0 for t in content)
    stream = await client.chat.completions.create(
        model=MODEL, messages=ask(), logprobs=True, top_logprobs=2, stream=True, seed=4, **ON_SCRIPT
    )
    streamed = [
        t.token async for chunk in stream for c in chunk.choices if c.logprobs for t in c.logprobs.content or []
    ]
    assert streamed == [t.token for t in content]


async def test_completion_logprobs_cover_every_model_token_at_its_place_in_the_text(local, tokenizer):
    prompt = render_prompt(SCRIPT_QUESTION, "instruct", tokenizer)
    reply = await local.completions.create(model=MODEL, prompt=prompt, logprobs=2, **ON_SCRIPT)
    choice = reply.choices[0]
    listed = choice.logprobs
    assert len(listed.tokens) == len(listed.token_logprobs) == reply.usage.completion_tokens
    assert all(len(top) <= 2 for top in listed.top_logprobs)
    placed = [
        choice.text[at : at + len(token)] == token for at, token in zip(listed.text_offset, listed.tokens, strict=True)
    ]
    assert sum(placed) >= len(placed) - 1  # all but the end-of-sequence token, which has no text
    assert "<result>" not in "".join(listed.tokens) and "<result>" in choice.text


async def test_a_stop_string_ends_the_answer_but_never_a_search_query(client):
    cut = await client.chat.completions.create(model=MODEL, messages=ask(), stop=["need"], **ON_SCRIPT)
    choice = cut.choices[0]
    assert (choice.finish_reason, choice.model_extra["stop_reason"]) == ("stop", "need")
    assert choice.message.model_extra["reasoning"] == "<think> I " and cut.usage.model_extra["searches"] == 0
    searched = await client.chat.completions.create(model=MODEL, messages=ask(), stop=["Freedonia </"], **ON_SCRIPT)
    assert searched.choices[0].message.model_extra["answer"] == SCRIPT_ANSWER


@pytest.mark.parametrize("keep", [False, True])
async def test_a_stream_never_shows_part_of_a_stop_string(local, tokenizer, keep):
    asked = {
        "model": MODEL,
        "prompt": render_prompt(SCRIPT_QUESTION, "instruct", tokenizer),
        "stop": ["boxed"],
        **ON_SCRIPT,
    }
    extra = {"include_stop_str_in_output": keep}
    whole = await local.completions.create(**asked, extra_body=extra)
    stream = await local.completions.create(**asked, stream=True, extra_body=extra)
    pieces = [c.text async for chunk in stream for c in chunk.choices]
    text = "".join(pieces)
    assert text == whole.choices[0].text and text.endswith("\\boxed" if keep else "\\")
    assert keep or not any(piece.endswith(("b", "bo", "box", "boxe")) for piece in pieces)
    assert whole.choices[0].finish_reason == "stop" and whole.choices[0].model_extra["stop_reason"] == "boxed"


async def test_responses_give_the_answer_texts_logprobs_when_included(local):
    asked = {
        "model": MODEL, "input": SCRIPT_QUESTION, "temperature": 0.5, "max_output_tokens": 200, "top_logprobs": 2,
        "include": ["message.output_text.logprobs"],
    }  # fmt: skip
    response = await local.responses.create(**asked)
    text = next(item for item in response.output if item.type == "message").content[0]
    assert text.logprobs and all(len(t.top_logprobs) == 2 for t in text.logprobs)
    assert text.text in "".join(t.token for t in text.logprobs)
    streamed = []
    async with local.responses.stream(**asked) as stream:
        async for event in stream:
            if event.type == "response.output_text.delta":
                streamed += [t.token for t in event.logprobs]
    assert streamed == [t.token for t in text.logprobs]
    plain = await local.responses.create(**{**asked, "top_logprobs": None, "include": None})
    assert next(item for item in plain.output if item.type == "message").content[0].logprobs == []
