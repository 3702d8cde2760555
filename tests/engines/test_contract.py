"""The engine contract (research/protocol/engine.py), run against every real engine."""

from __future__ import annotations

from contextlib import aclosing

import pytest

from research.engines import GREEDY, SamplingOptions, collect
from research.protocol import SEARCH_STOP, format_result, render_prompt
from tests.support.scripted import SCRIPT_AFTER, SCRIPT_BEFORE, SCRIPT_CORPUS, SCRIPT_QUESTION

IM_END = 151645


@pytest.fixture
def prompt_ids(tokenizer) -> list[int]:
    return tokenizer.encode(render_prompt(SCRIPT_QUESTION, "instruct", tokenizer))


def result_ids(tokenizer) -> list[int]:
    return tokenizer.encode(format_result([p["contents"] for p in SCRIPT_CORPUS[:5]]), add_special_tokens=False)


async def test_generation_stops_at_a_stop_string_that_spans_several_tokens(engine, prompt_ids, tokenizer):
    out = await collect(engine.generate(prompt_ids, max_tokens=200, stop=[SEARCH_STOP]))
    assert out.text == SCRIPT_BEFORE
    assert (out.finish_reason, out.stop_reason) == ("stop", SEARCH_STOP)
    tail = [tokenizer.decode([t]) for t in out.token_ids[-3:]]
    assert tail == [" </", "search", ">"]  # the stop was completed by its last token, not one token
    assert tokenizer.decode(out.token_ids) == out.text


async def test_eos_ends_generation_and_is_reported_in_ids_not_text(engine, prompt_ids, tokenizer):
    first = await collect(engine.generate(prompt_ids, max_tokens=200, stop=[SEARCH_STOP]))
    ids = prompt_ids + first.token_ids + result_ids(tokenizer)
    out = await collect(engine.generate(ids, max_tokens=200, stop=[SEARCH_STOP]))
    assert out.text == SCRIPT_AFTER
    assert (out.finish_reason, out.stop_reason) == ("stop", None)
    assert out.token_ids[-1] == IM_END
    assert tokenizer.decode(out.token_ids, skip_special_tokens=True) == out.text


async def test_max_tokens_limits_the_generation(engine, prompt_ids, tokenizer):
    out = await collect(engine.generate(prompt_ids, max_tokens=5, stop=[SEARCH_STOP]))
    assert out.finish_reason == "length"
    assert len(out.token_ids) == 5
    assert tokenizer.decode(out.token_ids) == out.text == SCRIPT_BEFORE[: len(out.text)]


async def test_logprobs_come_one_per_token_when_asked(engine, prompt_ids):
    sampling = SamplingOptions(temperature=0.0, logprobs=True)
    out = await collect(engine.generate(prompt_ids, max_tokens=8, stop=[SEARCH_STOP], sampling=sampling))
    assert out.logprobs is not None and len(out.logprobs) == len(out.token_ids) == 8
    assert all(lp <= 0.0 for lp in out.logprobs)
    plain = await collect(engine.generate(prompt_ids, max_tokens=8, stop=[SEARCH_STOP], sampling=GREEDY))
    assert plain.logprobs is None and plain.token_ids == out.token_ids


async def test_top_logprobs_list_the_most_likely_tokens_with_the_greedy_one_first(engine, prompt_ids):
    sampling = SamplingOptions(temperature=0.0, logprobs=True, top_logprobs=3)
    out = await collect(engine.generate(prompt_ids, max_tokens=6, stop=[SEARCH_STOP], sampling=sampling))
    assert out.top_logprobs is not None and len(out.top_logprobs) == len(out.token_ids) == 6
    for token, lp, top in zip(out.token_ids, out.logprobs or [], out.top_logprobs, strict=True):
        assert len(top) >= 3
        best = max(top, key=top.__getitem__)
        assert best == token and top[token] == pytest.approx(lp, abs=1e-4)  # greedy: the sampled token is the best
    plain = await collect(engine.generate(prompt_ids, max_tokens=2, sampling=SamplingOptions(0.0, logprobs=True)))
    assert plain.top_logprobs is None


async def test_logit_bias_moves_the_greedy_choice(engine, prompt_ids, tokenizer):
    first = (await collect(engine.generate(prompt_ids, max_tokens=1, sampling=GREEDY))).token_ids[0]
    other = tokenizer.encode(" rivers", add_special_tokens=False)[0]
    pushed = SamplingOptions(temperature=0.0, logit_bias={other: 100.0})
    assert (await collect(engine.generate(prompt_ids, max_tokens=1, sampling=pushed))).token_ids == [other]
    barred = SamplingOptions(temperature=0.0, logit_bias={first: -100.0})
    assert (await collect(engine.generate(prompt_ids, max_tokens=1, sampling=barred))).token_ids != [first]


async def test_presence_and_frequency_penalties_leave_the_prompts_tokens_alone(engine, prompt_ids):
    """Penalties count the tokens generated, never the prompt's: the first token is greedy's
    (the engines' penalty arithmetic: tests/engines/test_sampling.py)."""
    plain = await collect(engine.generate(prompt_ids, max_tokens=12, stop=[SEARCH_STOP], sampling=GREEDY))
    sampling = SamplingOptions(temperature=0.0, presence_penalty=2.0, frequency_penalty=2.0)
    out = await collect(engine.generate(prompt_ids, max_tokens=12, stop=[SEARCH_STOP], sampling=sampling))
    assert out.token_ids[0] == plain.token_ids[0]


async def test_seeded_sampling_is_reproducible(engine, tokenizer):
    ids = tokenizer.encode("Tell me a long story about rivers")
    sampling = SamplingOptions(temperature=1.0, seed=7)
    a = await collect(engine.generate(ids, max_tokens=12, sampling=sampling))
    b = await collect(engine.generate(ids, max_tokens=12, sampling=sampling))
    assert a.token_ids == b.token_ids


async def test_leaving_the_stream_early_aborts_the_request(engine, tokenizer, wait_idle):
    # Sampling at temperature 1 off-script runs for thousands of tokens unless aborted.
    ids = tokenizer.encode("Tell me a long story about rivers")
    stream = engine.generate(ids, max_tokens=3000, sampling=SamplingOptions(temperature=1.0, seed=1))
    async with aclosing(stream):
        async for chunk in stream:
            assert chunk.finish_reason is None
            break
    assert await wait_idle(engine) == 0


async def test_max_tokens_is_cut_to_the_room_left_in_the_context_window(engine, prompt_ids):
    assert engine.max_model_len == 4096
    long_prompt = [220] * (engine.max_model_len - len(prompt_ids) - 3) + prompt_ids
    out = await collect(engine.generate(long_prompt, max_tokens=8192, stop=[SEARCH_STOP]))
    assert (out.finish_reason, len(out.token_ids)) == ("length", 3)


async def test_a_prompt_that_fills_the_context_ends_at_once_with_length(engine, prompt_ids):
    full = [220] * (engine.max_model_len - len(prompt_ids)) + prompt_ids
    out = await collect(engine.generate(full, max_tokens=10))
    assert (out.finish_reason, out.token_ids, out.text) == ("length", [], "")


async def test_a_new_upstream_engine_cuts_its_first_budget_to_the_servers_context_window(
    vllm_server, tokenizer, prompt_ids
):
    """The upstream reports its context window in its model list: a fresh engine reads it before its first request
    (else that request asks for more tokens than the window holds, and vLLM refuses it)."""
    from research.engines.upstream import UpstreamEngine

    engine = UpstreamEngine(vllm_server, tokenizer)
    try:
        long_prompt = [220] * (4096 - len(prompt_ids) - 3) + prompt_ids
        out = await collect(engine.generate(long_prompt, max_tokens=8192, stop=[SEARCH_STOP]))
    finally:
        await engine.close()
    assert (engine.max_model_len, out.finish_reason, len(out.token_ids)) == (4096, "length", 3)


async def test_a_budget_below_one_token_is_rejected(engine, prompt_ids):
    with pytest.raises(ValueError, match="max_tokens"):
        await collect(engine.generate(prompt_ids, max_tokens=0))


async def test_a_serving_engine_reports_itself_healthy(engine):
    await engine.check_health()
