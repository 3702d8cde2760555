"""Every OpenAI field clients send: accepted where OpenAI accepts it, honoured where it maps, a named 400 where not."""

from __future__ import annotations

import httpx
import pytest

from research.protocol import INSTRUCT_SYSTEM
from tests.conftest import serving
from tests.support.scripted import SCRIPT_ANSWER, SCRIPT_QUESTION

MODEL = "scripted"
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": SCRIPT_QUESTION}], "temperature": 0}
RESPONSES = {"model": MODEL, "input": SCRIPT_QUESTION, "temperature": 0}

ACCEPTED_CHAT = [
    {"reasoning_effort": "medium"}, {"service_tier": "auto"}, {"prompt_cache_key": "k"}, {"safety_identifier": "u1"},
    {"verbosity": "low"}, {"modalities": ["text"]}, {"prediction": {"type": "content", "content": "x"}},
    {"web_search_options": {}}, {"min_p": 0.05}, {"repetition_penalty": 1.1}, {"chat_template_kwargs": {"x": 1}},
    {"include_reasoning": True}, {"temperature": None, "top_k": 1}, {"top_p": None}, {"n": None}, {"n": 1},
    {"presence_penalty": None}, {"frequency_penalty": 0}, {"stop": None}, {"tools": []}, {"tool_choice": "none"},
    {"response_format": {"type": "text"}}, {"logprobs": False}, {"store": False}, {"metadata": {"a": "b"}},
    {"user": "u"}, {"seed": 7}, {"max_completion_tokens": 512}, {"stream_options": None}, {"parallel_tool_calls": None},
    {"presence_penalty": 0.01}, {"frequency_penalty": -0.01}, {"logit_bias": {"0": 0.5, "151643": -1}},
    {"n": 2}, {"stop": ["xyzzy"]}, {"stop": "xyzzy"}, {"logprobs": True, "top_logprobs": 3}, {"logprobs": True},
    {"stop_token_ids": [151643]}, {"include_stop_str_in_output": True}, {"return_token_ids": True},
]  # fmt: skip
REJECTED_CHAT = [
    ({"n": 17}, "n"), ({"n": 1000}, "n"), ({"n": 0}, "n"), ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"stop": [str(i) for i in range(10_000)]}, "stop"), ({"stop": "x" * 257}, "stop"), ({"stop": [""]}, "stop"),
    ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
    ({"tool_choice": "required"}, "tool_choice"), ({"top_logprobs": 3}, "top_logprobs"),
    ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"), ({"stop_token_ids": [10**7]}, "stop_token_ids"),
    ({"stop_token_ids": [-1]}, "stop_token_ids"), ({"stop_token_ids": list(range(65))}, "stop_token_ids"),
    ({"response_format": {"type": "json_schema"}}, "response_format"), ({"presence_penalty": 2.5}, "presence_penalty"),
    ({"frequency_penalty": -3}, "frequency_penalty"), ({"logit_bias": {"1": 101}}, "logit_bias"),
    ({"logit_bias": {"x": 1}}, "logit_bias"), ({"logit_bias": {"-5": 1}}, "logit_bias"),
    ({"logit_bias": {str(i): 1 for i in range(301)}}, "logit_bias"), ({"logit_bias": {"10000000": 1}}, "logit_bias"),
    ({"logit_bias": {str(i): 1 for i in range(100_000)}}, "logit_bias"),
    ({"modalities": ["text", "audio"]}, "modalities"),
    ({"reasoning_effort": "extreme"}, "reasoning_effort"), ({"min_p": 2}, "min_p"),
]  # fmt: skip
ACCEPTED_RESPONSES = [
    {"instructions": INSTRUCT_SYSTEM}, {"store": True}, {"reasoning": {"effort": "low", "summary": "auto"}},
    {"text": {"format": {"type": "text"}, "verbosity": "low"}}, {"tools": [{"type": "web_search"}]},
    {"tool_choice": "auto"}, {"parallel_tool_calls": True}, {"include": ["file_search_call.results"]},
    {"truncation": "disabled"}, {"metadata": {"a": "b"}}, {"service_tier": "auto"}, {"prompt_cache_key": "k"},
    {"safety_identifier": "u"}, {"max_output_tokens": 512}, {"max_tool_calls": 2}, {"temperature": None, "top_k": 1},
    {"input": [{"role": "user", "content": [{"type": "input_text", "text": SCRIPT_QUESTION}]}]},
    {"input": [{"type": "message", "role": "user", "content": SCRIPT_QUESTION}]},
    {"top_logprobs": 2}, {"include": ["message.output_text.logprobs"]},
]  # fmt: skip
REJECTED_RESPONSES = [
    ({"previous_response_id": "resp_1", "conversation": "conv_1"}, "conversation"),
    ({"background": True, "store": False}, "background"), ({"tools": [{"type": "function", "name": "f"}]}, "tools"),
    ({"text": {"format": {"type": "json_schema", "name": "x", "schema": {}}}}, "text"),
    ({"top_logprobs": 21}, "top_logprobs"), ({"input": ""}, "input"), ({"logit_bias": {"1": 1}}, "logit_bias"),
    ({"include": ["reasoning.encrypted_content"]}, "include"),
    ({"max_output_tokens": 10**9}, "max_output_tokens"),
    ({"input": [{"role": "tool", "content": "x"}]}, "input"), ({"input": [{"type": {}, "role": None}]}, "input"),
    ({"input": [{"role": "user", "content": "q"}, {"type": "function_call", "call_id": "c"}]}, "input"),
]  # fmt: skip


@pytest.fixture
async def http(live_transformers):
    async with httpx.AsyncClient(base_url=live_transformers.url, timeout=120) as client:
        yield client


@pytest.mark.parametrize("extra", ACCEPTED_CHAT, ids=lambda e: next(iter(e)))
async def test_chat_accepts_what_openai_accepts(http, extra):
    reply = await http.post("/chat/completions", json={**CHAT, **extra})
    assert reply.status_code == 200, reply.text
    assert reply.json()["choices"][0]["message"]["answer"] == SCRIPT_ANSWER


@pytest.mark.parametrize(("extra", "param"), REJECTED_CHAT, ids=lambda e: str(e)[:30])
async def test_chat_rejects_what_it_cannot_do_naming_the_field(http, extra, param):
    reply = await http.post("/chat/completions", json={**CHAT, **extra})
    error = reply.json()["error"]
    assert reply.status_code == 400 and error["param"] == param and error["code"], error


@pytest.mark.parametrize("extra", ACCEPTED_RESPONSES, ids=lambda e: next(iter(e)))
async def test_responses_accept_what_openai_accepts(http, extra):
    reply = await http.post("/responses", json={**RESPONSES, **extra})
    assert reply.status_code == 200, reply.text
    assert reply.json()["answer"] == SCRIPT_ANSWER


@pytest.mark.parametrize(("extra", "param"), REJECTED_RESPONSES, ids=lambda e: str(e)[:30])
async def test_responses_reject_what_they_cannot_do_naming_the_field(http, extra, param):
    reply = await http.post("/responses", json={**RESPONSES, **extra})
    error = reply.json()["error"]
    assert reply.status_code == 400 and error["param"].startswith(param) and error["code"], error


async def test_reasoning_effort_is_a_search_budget(http):
    none = (await http.post("/chat/completions", json={**CHAT, "reasoning_effort": "none"})).json()
    assert none["usage"]["searches"] == 0 and none["choices"][0]["stop_reason"] == "search_limit"
    low = (await http.post("/responses", json={**RESPONSES, "reasoning": {"effort": "minimal"}})).json()
    assert low["usage"]["searches"] == 1 and low["answer"] == SCRIPT_ANSWER
    capped = (await http.post("/responses", json={**RESPONSES, "max_tool_calls": 0})).json()
    assert capped["usage"]["searches"] == 0


async def test_include_reasoning_false_leaves_the_reasoning_out(http):
    message = (await http.post("/chat/completions", json={**CHAT, "include_reasoning": False})).json()
    message = message["choices"][0]["message"]
    assert message["reasoning"] is None and message["searches"] and message["answer"] == SCRIPT_ANSWER


async def test_cors_is_opt_in(transformers_engine, script_index):
    preflight = {"Origin": "http://app.example", "Access-Control-Request-Method": "POST"}
    for origins, allowed in (((), False), (("http://app.example",), True)):
        async with (
            serving(transformers_engine, script_index, allowed_origins=origins) as live,
            httpx.AsyncClient(base_url=live.url, timeout=60) as http,
        ):
            reply = await http.options("/chat/completions", headers=preflight)
        assert (reply.headers.get("access-control-allow-origin") == "http://app.example") is allowed
