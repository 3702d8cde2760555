"""The loop in Search-R1's and ReCall's dialects, end to end: the transformers engine on scripted models of
each protocol, a real LanceDB index, MiniLM embeddings."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from research.engines.args import open_engine
from research.protocol import Engine, LoopLimits, get_protocol, run_search_loop
from research.protocol.search_r1 import INVALID_ACTION
from research.testbed.models import engine_args
from tests.support.scripted import SCRIPT_ANSWER, SCRIPT_QUERY, SCRIPT_QUESTION, SCRIPTS, scripted_model, scripted_reply


async def _engine(protocol: str) -> AsyncIterator[Engine]:
    engine = open_engine(scripted_model(protocol=protocol), engine_args("transformers"))
    yield engine
    await engine.close()


@pytest_asyncio.fixture(scope="module", params=["search-r1", "recall"])
async def dialect(request: pytest.FixtureRequest) -> AsyncIterator[tuple[str, Engine]]:
    async for engine in _engine(request.param):
        yield request.param, engine


def _prompt(protocol: str, engine: Engine) -> list[int]:
    tok = engine.tokenizer
    return tok.encode(get_protocol(protocol).render_prompt(SCRIPT_QUESTION, "instruct", tok))


async def test_each_protocol_searches_reads_its_reply_and_answers(dialect, retriever):
    name, engine = dialect
    protocol, tok = get_protocol(name), engine.tokenizer
    traj = await run_search_loop(engine, retriever, _prompt(name, engine), protocol=protocol)
    assert [s.query for s in traj.searches] == [SCRIPT_QUERY]
    passages = traj.searches[0].results
    assert len(passages) == protocol.default_k  # Search-R1 trained with 3, ReCall's tool defaults to 5
    reply = scripted_reply(protocol, [p.contents for p in passages])
    before, after = SCRIPTS[name]
    turn_end = tok.eos_token if protocol.eos_in_text else ""  # ReCall's turns end with <|im_end|>, in the text
    assert traj.text == before + turn_end + reply + after
    assert traj.answer == SCRIPT_ANSWER and traj.well_formed and traj.finish_reason == "stop"
    assert protocol.reward(traj.response, SCRIPT_ANSWER, eos_token=tok.eos_token) == 1.0
    inserted = [t for t, m in zip(traj.completion_ids, traj.mask, strict=True) if m == 0]
    generated = [t for t, m in zip(traj.completion_ids, traj.mask, strict=True) if m == 1]
    assert tok.decode(inserted) == reply
    assert tok.decode(generated, skip_special_tokens=True) == before + after


async def test_search_r1_ends_at_its_answer_without_an_eos(retriever):
    async for engine in _engine("search-r1"):
        prompt = _prompt("search-r1", engine)
        traj = await run_search_loop(engine, retriever, prompt, protocol=get_protocol("search-r1"))
        assert traj.text.endswith("</answer>") and traj.eos_text == "" and traj.response == traj.text
        assert engine.tokenizer.decode(traj.completion_ids[-3:]).endswith("</answer>")


async def test_a_turn_that_neither_searches_nor_answers_gets_search_r1s_notice_and_loses_its_eos(retriever):
    """The ReCall model's first turn (a tool call, then EOS) is an invalid action in Search-R1's dialect."""
    async for engine in _engine("recall"):
        tok = engine.tokenizer
        limits = LoopLimits(max_tokens=400, max_searches=1)
        traj = await run_search_loop(
            engine, retriever, _prompt("recall", engine), limits=limits, protocol=get_protocol("search-r1")
        )
        before = SCRIPTS["recall"][0]
        assert traj.text.startswith(before + INVALID_ACTION) and traj.searches == []
        turn = len(tok.encode(before))
        notice = tok.encode(INVALID_ACTION)
        assert traj.completion_ids[turn : turn + len(notice)] == notice  # the EOS between them is gone
        assert traj.mask[:turn] == [1] * turn and traj.mask[turn : turn + len(notice)] == [0] * len(notice)
        assert traj.finish_reason in {"search_limit", "length", "stop"}
