"""The README's client examples, run as written against the server ``research-demo`` starts (address changed).

That server is the toy ReSearch model on the toy world's index (``research.testbed.serve``);
here it runs on the transformers engine on a free port. The examples ask a held-out
question; what the toy model answers to an unseen question depends on the CPU that
trained it, so each example must print what the server itself answers, and that answer
must have come from searches (the README states the gold one, Rachathford).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from research.testbed.serve import MODEL_NAME
from tests.conftest import serving

README = Path(__file__).parents[2] / "README.md"
ADDRESS = "http://127.0.0.1:8000"


def client_blocks() -> list[tuple[str, str]]:
    """(language, code) of every fenced block in the README's Clients section."""
    text = README.read_text()
    section = text[text.index("## Clients") :]
    section = section[: section.index("\n## ", 1)]
    return re.findall(r"```(bash|python)\n(.*?)```", section, re.S)


def test_the_clients_section_has_curl_sdk_langchain_and_ask_examples():
    code = "".join(c for _, c in client_blocks())
    sdk = ("from openai import OpenAI", "from research.clients import Client")
    for needle in ("curl ", *sdk, "ChatReSearch", "ReSearchTool", "research ask"):
        assert needle in code


QUESTION = "In which city was the founder of Zuxkoth Labs born?"


@pytest.mark.parametrize("number", range(5))
async def test_readme_client_example_runs(number, toy_transformers_engine, toy_index, toy_recipe):
    language, code = client_blocks()[number]
    if language == "bash" and "curl " in code and shutil.which("curl") is None:
        pytest.skip("curl is not installed on this machine")
    assert QUESTION in code
    config = {"model_name": MODEL_NAME, "template": "base", "search_top_k": toy_recipe.top_k}
    async with serving(toy_transformers_engine, toy_index, **config) as live:
        import openai

        client = openai.AsyncOpenAI(base_url=live.url, api_key="unused")
        messages = [{"role": "user", "content": QUESTION}]
        reply = await client.chat.completions.create(model=MODEL_NAME, messages=messages, temperature=0)
        served = reply.choices[0].message.model_extra
        code = code.replace(ADDRESS, live.url.removesuffix("/v1"))
        output = await asyncio.to_thread(_run, language, code)
    assert served["searches"] and served["answer"]
    assert served["answer"] in output


def _run(language: str, code: str) -> str:
    if language == "python":
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(code, "README.md", "exec"), {})
        return out.getvalue()
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", code], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr
    return done.stdout
