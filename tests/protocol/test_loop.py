"""The search loop end to end: every real engine, a real LanceDB index, MiniLM embeddings."""

from __future__ import annotations

import asyncio
from contextlib import aclosing

import pytest

from research.engines import SamplingOptions
from research.protocol import (
    RESEARCH,
    LoopLimits,
    ModelText,
    ResultBlock,
    format_result,
    render_prompt,
    reward,
    run_search_loop,
    stream_search_loop,
)
from research.protocol.loop import retrieve
from research.retrieval import BatchingRetriever
from research.wire import SearchDone, SearchIssued
from tests.support.counting import CountingIndex
from tests.support.scripted import SCRIPT_AFTER, SCRIPT_ANSWER, SCRIPT_BEFORE, SCRIPT_QUERY, SCRIPT_QUESTION


@pytest.fixture
def prompt_ids(tokenizer) -> list[int]:
    return tokenizer.encode(render_prompt(SCRIPT_QUESTION, "instruct", tokenizer))


async def test_the_loop_searches_reads_the_result_and_answers(engine, retriever, prompt_ids, tokenizer):
    traj = await run_search_loop(engine, retriever, prompt_ids)
    assert [s.query for s in traj.searches] == [SCRIPT_QUERY]
    passages = traj.searches[0].results
    assert len(passages) == 5 and passages[0].id in {"fr-1", "fr-2"}
    block = format_result(passages)
    assert traj.text == SCRIPT_BEFORE + block + SCRIPT_AFTER
    assert traj.answer == SCRIPT_ANSWER
    assert traj.finish_reason == "stop" and traj.well_formed
    assert traj.eos_text == tokenizer.eos_token and traj.response == traj.text + tokenizer.eos_token
    assert reward(traj.response, SCRIPT_ANSWER, eos_token=tokenizer.eos_token) == 1.0
    assert traj.prompt_ids == prompt_ids


async def test_the_mask_marks_exactly_the_retrieved_tokens(engine, retriever, prompt_ids, tokenizer):
    traj = await run_search_loop(engine, retriever, prompt_ids)
    assert len(traj.mask) == len(traj.completion_ids)
    retrieved = [t for t, m in zip(traj.completion_ids, traj.mask, strict=True) if m == 0]
    generated = [t for t, m in zip(traj.completion_ids, traj.mask, strict=True) if m == 1]
    assert tokenizer.decode(retrieved) == format_result(traj.searches[0].results)
    assert tokenizer.decode(generated, skip_special_tokens=True) == SCRIPT_BEFORE + SCRIPT_AFTER
    # One contiguous block of zeros, right after the model's </search>:
    first_zero = traj.mask.index(0)
    assert tokenizer.decode(traj.completion_ids[:first_zero]) == SCRIPT_BEFORE
    assert traj.mask == [1] * first_zero + [0] * len(retrieved) + [1] * (len(traj.mask) - first_zero - len(retrieved))


async def test_model_tokens_keep_their_logprobs_and_retrieved_ones_have_none(engine, retriever, prompt_ids):
    sampling = SamplingOptions(temperature=0.0, logprobs=True)
    traj = await run_search_loop(engine, retriever, prompt_ids, sampling=sampling)
    assert traj.logprobs is not None and len(traj.logprobs) == len(traj.mask)
    assert all((lp is None) == (m == 0) for lp, m in zip(traj.logprobs, traj.mask, strict=True))


async def test_the_search_limit_ends_the_response(engine, retriever, prompt_ids):
    traj = await run_search_loop(engine, retriever, prompt_ids, limits=LoopLimits(max_searches=0))
    assert traj.finish_reason == "search_limit"
    assert traj.searches == [] and traj.text == SCRIPT_BEFORE and 0 not in traj.mask


async def test_the_token_budget_counts_retrieved_tokens_too(engine, retriever, prompt_ids, tokenizer):
    before = len(tokenizer.encode(SCRIPT_BEFORE))
    traj = await run_search_loop(engine, retriever, prompt_ids, limits=LoopLimits(max_tokens=before + 10))
    assert traj.finish_reason == "length"
    assert len(traj.completion_ids) == before + 10 and traj.mask[before:] == [0] * 10
    assert traj.text.startswith(SCRIPT_BEFORE + " <result>")
    assert not traj.well_formed


async def test_top_k_sets_the_passages_per_search(engine, retriever, prompt_ids):
    traj = await run_search_loop(engine, retriever, prompt_ids, limits=LoopLimits(k=2))
    assert len(traj.searches[0].results) == 2
    assert traj.answer == SCRIPT_ANSWER


async def test_events_stream_in_order_and_add_up_to_the_trajectory(engine, retriever, prompt_ids):
    events = [e async for e in stream_search_loop(engine, retriever, prompt_ids)]
    order = [type(e).__name__ for e in events if not isinstance(e, ModelText)]
    assert order == ["SearchIssued", "SearchDone", "ResultBlock", "Finished"]
    traj = events[-1].trajectory
    streamed = "".join(e.text for e in events if isinstance(e, ModelText | ResultBlock))
    assert streamed == traj.text
    issued = next(e for e in events if isinstance(e, SearchIssued))
    done = next(e for e in events if isinstance(e, SearchDone))
    assert issued.query == done.search.query == SCRIPT_QUERY and issued.index == done.search.index == 0
    assert done.search is traj.searches[0]
    block = next(e for e in events if isinstance(e, ResultBlock))
    # the batching retriever reports the index's own time; the rest of the search's time was queueing
    assert 0 < block.index_seconds <= block.seconds


async def test_closing_the_stream_mid_generation_aborts_it(engine, retriever, prompt_ids, wait_idle):
    stream = stream_search_loop(engine, retriever, prompt_ids)
    async with aclosing(stream):
        async for event in stream:
            if isinstance(event, SearchDone):
                break
    assert await wait_idle(engine) == 0


async def test_concurrent_loops_share_retrieval_batches(engine, script_index, prompt_ids):
    index = CountingIndex(script_index)
    retriever = BatchingRetriever(index)
    trajectories = await asyncio.gather(*(run_search_loop(engine, retriever, prompt_ids) for _ in range(6)))
    await retriever.close()
    assert {t.answer for t in trajectories} == {SCRIPT_ANSWER}
    assert sum(index.batches) == 6


class CountingRetriever:
    """The real retriever, with its calls counted."""

    def __init__(self, inner):
        self.inner, self.calls = inner, 0

    async def search(self, queries, *, k):
        self.calls += 1
        return await self.inner.search(queries, k=k)


async def test_an_empty_query_gets_nothing_to_search_without_touching_the_index(retriever):
    counting = CountingRetriever(retriever)
    assert await retrieve(counting, "", k=5) == ([], 0.0, 0.0)
    assert await retrieve(counting, SCRIPT_QUERY, k=0) == ([], 0.0, 0.0)
    assert counting.calls == 0
    empty = RESEARCH.next_step("<search> </search>", "stop")
    assert RESEARCH.reply(empty, [[]]) == format_result(["nothing to search"])
    passages, *_ = await retrieve(counting, SCRIPT_QUERY, k=3)
    assert counting.calls == 1 and len(passages) == 3


def test_limits_are_validated_in_the_users_words():
    with pytest.raises(ValueError, match="k must be at least 1"):
        LoopLimits(k=0)
    with pytest.raises(ValueError, match="max_searches"):
        LoopLimits(max_searches=-1)
    with pytest.raises(ValueError, match="max_tokens"):
        LoopLimits(max_tokens=0)


class RecordingEngine:
    """A real engine, with the sampling of each turn written down."""

    def __init__(self, engine) -> None:
        self.engine, self.turns = engine, []

    def __getattr__(self, name: str):
        return getattr(self.engine, name)

    def generate(self, prompt_ids, **kwargs):
        self.turns.append(kwargs["sampling"])
        return self.engine.generate(prompt_ids, **kwargs)


async def test_penalties_count_the_models_tokens_of_earlier_turns_never_the_inserted_ones(
    transformers_engine, retriever, prompt_ids
):
    recording = RecordingEngine(transformers_engine)
    sampling = SamplingOptions(temperature=0.0, presence_penalty=0.01, frequency_penalty=0.02, logit_bias={7: 1.0})
    traj = await run_search_loop(recording, retriever, prompt_ids, sampling=sampling)
    assert traj.answer == SCRIPT_ANSWER  # penalties this small leave the script as it is
    first, second = recording.turns
    assert first == sampling  # nothing generated yet: the engine counts the turn's own tokens
    turn = traj.completion_ids[: traj.mask.index(0)]
    expected = {7: 1.0}
    for token in set(turn):
        expected[token] = expected.get(token, 0.0) - 0.01 - 0.02 * turn.count(token)
    assert second.logit_bias == pytest.approx(expected)
    inserted = {t for t, m in zip(traj.completion_ids, traj.mask, strict=True) if m == 0}
    assert inserted - set(turn) and not (inserted - set(turn)) & set(second.logit_bias)


async def test_a_clients_stop_string_ends_the_response_where_the_model_writes_it(
    engine, retriever, prompt_ids, tokenizer
):
    traj = await run_search_loop(engine, retriever, prompt_ids, stop=["need"])
    assert (traj.text, traj.finish_reason, traj.stop_reason) == ("<think> I need", "stop", "need")
    assert traj.searches == [] and traj.mask == [1] * len(traj.completion_ids)
    assert tokenizer.decode(traj.completion_ids) == traj.text  # cut after the token that completed it


async def test_a_stop_string_inside_a_search_query_never_cuts_the_loop(engine, retriever, prompt_ids):
    """ "Freedonia </" is only in the query: the search runs; "boxed" after it ends the response."""
    traj = await run_search_loop(engine, retriever, prompt_ids, stop=["Freedonia </", "boxed"])
    assert [s.query for s in traj.searches] == [SCRIPT_QUERY]
    assert traj.text.endswith("\\boxed") and (traj.finish_reason, traj.stop_reason) == ("stop", "boxed")
    assert traj.answer is None


async def test_a_clients_stop_token_ends_the_response(engine, retriever, prompt_ids, tokenizer):
    need = tokenizer.encode(" need", add_special_tokens=False)
    assert len(need) == 1
    traj = await run_search_loop(engine, retriever, prompt_ids, stop_token_ids=need)
    assert (traj.text, traj.stop_reason, traj.completion_ids[-1]) == ("<think> I", need[0], need[0])  # text: as EOS
