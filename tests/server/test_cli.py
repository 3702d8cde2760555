"""``research-serve`` as users run it: a subprocess on loopback, answered through the ``openai`` SDK."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import openai

from research.retrieval.cli import Serve
from research.server.cli import ServeArgs
from research.testbed.processes import free_port, launched
from tests.support.scripted import SCRIPT_ANSWER, SCRIPT_QUESTION


def test_research_serve_answers_an_openai_client_and_logs_json(model_path, script_index, tmp_path):
    port = free_port()
    log = tmp_path / "serve.log"
    args = [sys.executable, "-m", "research.server.cli", "--model", str(model_path), "--index", script_index.uri]
    args += ["--engine", "transformers", "--template", "instruct", "--port", str(port), "--served-model-name", "toy"]
    args += ["--api-key", "k"]
    with launched(args, f"http://127.0.0.1:{port}/health", log, timeout=300):
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="k")
        reply = client.chat.completions.create(
            model="toy", messages=[{"role": "user", "content": SCRIPT_QUESTION}], temperature=0
        )
        assert reply.choices[0].message.model_extra["answer"] == SCRIPT_ANSWER
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    done = [line for line in lines if line.get("request_id") == reply.id]
    assert done and all(line["level"] == "INFO" for line in done)


def test_an_unknown_protocol_is_refused_with_the_choices(tmp_path):
    flag = subprocess.run(
        [sys.executable, "-m", "research.server.cli", "--model", "m", "--index", "i", "--protocol", "searchr1"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert flag.returncode == 2 and "choose from 'auto', 'research', 'search-r1', 'recall'" in flag.stderr
    (tmp_path / "research.json").write_text('{"template": "base", "protocol": "searchr1"}')
    card = subprocess.run(
        [sys.executable, "-m", "research.server.cli", "--model", str(tmp_path), "--index", str(tmp_path / "none")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert card.returncode == 2, card.stderr
    assert "research.json: unknown protocol 'searchr1'; choose one of research, search-r1, recall" in card.stderr


def test_help_explains_engines_and_limits():
    out = subprocess.run([sys.executable, "-m", "research.server.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for flag in ("--engine", "--upstream-url", "--api-key", "--max-concurrent-requests", "--tensor-parallel-size"):
        assert flag in out.stdout


def test_servers_keep_idle_connections_open_longer_than_client_pools_do():
    """A request sent on a pooled connection just as the server closes it fails with a reset (the benchmark's
    ReadError): the server must outlast the pool (httpx's, which the openai SDK uses, keeps one 5 s)."""
    pool = httpx.Limits().keepalive_expiry
    assert pool is not None
    assert ServeArgs(model="m").uvicorn_options()["timeout_keep_alive"] > pool
    assert Serve(index="i").uvicorn_options()["timeout_keep_alive"] > pool
