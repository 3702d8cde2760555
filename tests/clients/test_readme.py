"""The README's client examples, run as written against a live server (only the address is changed)."""

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

from research.testbed.models import SCRIPT_ANSWER
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
    for needle in ("curl ", "from openai import OpenAI", "ReSearchTool", "research ask"):
        assert needle in code


@pytest.mark.parametrize("number", range(4))
async def test_readme_client_example_runs(number, transformers_engine, script_index):
    language, code = client_blocks()[number]
    if language == "bash" and "curl " in code and shutil.which("curl") is None:
        pytest.skip("curl is not installed on this machine")
    async with serving(transformers_engine, script_index, model_name="research") as live:
        code = code.replace(ADDRESS, live.url.removesuffix("/v1"))
        output = await asyncio.to_thread(_run, language, code)
    assert SCRIPT_ANSWER in output


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
