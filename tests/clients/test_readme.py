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
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
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
    async with demo_server(toy_transformers_engine, toy_index, toy_recipe) as (base, served):
        output = await asyncio.to_thread(_run, language, code.replace(ADDRESS, base))
    assert served["answer"] in output


@contextlib.asynccontextmanager
async def demo_server(engine, index, recipe) -> AsyncIterator[tuple[str, dict]]:
    """The demo's server on a free port: its address and its own chat answer to :data:`QUESTION` (searched for)."""
    import openai

    config = {"model_name": MODEL_NAME, "template": "base", "search_top_k": recipe.top_k}
    async with serving(engine, index, **config) as live:
        client = openai.AsyncOpenAI(base_url=live.url, api_key="unused")
        messages = [{"role": "user", "content": QUESTION}]
        reply = await client.chat.completions.create(model=MODEL_NAME, messages=messages, temperature=0)
        served = reply.choices[0].message.model_extra
        assert served["searches"] and served["answer"]
        yield live.url.removesuffix("/v1"), served


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


def mcp_blocks() -> tuple[str, str]:
    """The Claude Desktop config (JSON) and the Agents SDK example (Python) of "Use it from an MCP client"."""
    text = README.read_text()
    section = text[text.index("## Use it from an MCP client") :]
    section = section[: section.index("\n## ", 1)]
    [config] = re.findall(r"```json\n(.*?)```", section, re.S)
    [agents] = re.findall(r"```python\n(.*?)```", section, re.S)
    return config, agents


async def test_readme_mcp_examples_run(toy_transformers_engine, toy_index, toy_recipe):
    from mcp import Client, StdioServerParameters

    config, agents = mcp_blocks()
    desktop = json.loads(config)["mcpServers"]["research"]
    async with demo_server(toy_transformers_engine, toy_index, toy_recipe) as (base, served):
        # Claude Desktop launches the command it is given; so does the mcp SDK's stdio client.
        command = str(Path(sys.executable).parent / desktop["command"])
        args = [arg.replace(ADDRESS, base) for arg in desktop["args"]]
        async with Client(StdioServerParameters(command=command, args=args)) as mcp:
            asked = await mcp.call_tool("ask", {"question": QUESTION})
        output = await asyncio.to_thread(_run, "python", agents.replace(ADDRESS, base))
    assert not asked.is_error and json.loads(asked.content[0].text)["answer"] == served["answer"]
    assert output.startswith("['search', 'fetch', 'ask']\n") and served["answer"] in output
