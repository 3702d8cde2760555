"""The OpenAPI document matches reality: schemathesis fuzzes every route of a live ``research-serve``.

``schemathesis run`` (the CLI, unmodified) sends requests generated from the document
itself — examples, boundary values and fuzzed, valid and invalid — to a real server on
the scripted model, with ``model`` pinned to the served name (``schemathesis_hooks.py``)
so that valid requests reach generation. Every reply must be documented (status,
content type, body schema: a 400, not FastAPI's 422; ``/metrics`` as text), no request
may get a 5xx, and invalid data must be rejected.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from research.retrieval import PassageIndex
from research.testbed.processes import free_port, launched

MODEL = "scripted"
CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"
CHECKS += ",negative_data_rejection"
ROOT = Path(__file__).parents[2]


def test_every_route_answers_as_its_openapi_document_says(model_path: Path, script_index: PassageIndex, tmp_path):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    args = [sys.executable, "-m", "research.server.cli", "--model", str(model_path), "--index", script_index.uri]
    args += ["--served-model-name", MODEL, "--template", "instruct", "--engine", "transformers"]
    args += ["--port", str(port), "--max-tokens", "128", "--max-searches", "2"]
    run = [str(Path(sys.executable).parent / "schemathesis"), "run", f"{base}/openapi.json", "--checks", CHECKS]
    # One worker: hypothesis describes its filters by ast.parse-ing their source, and on CPython 3.11 two threads
    # parsing at once can fail with "AST constructor recursion depth mismatch" (a runtime error of the run, by
    # chance). Measured no slower: 68 s either way.
    run += ["--max-examples", "12", "--seed", "1", "--request-timeout", "120", "--workers", "1"]
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.server.schemathesis_hooks", "RESEARCH_SERVED_MODEL": MODEL}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    with launched(args, f"{base}/health", tmp_path / "research-serve.log", timeout=600):
        done = subprocess.run(run, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=1200)
    assert done.returncode == 0, done.stdout[-6000:]
