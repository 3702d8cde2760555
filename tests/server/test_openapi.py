"""The OpenAPI document matches reality: schemathesis fuzzes every route of a live ``research-serve``.

Generated requests (valid and invalid, from the document itself) go to a real server on
the scripted model, with ``model`` pinned to the served name so that valid requests reach
generation. Every reply must be documented (status, content type, body schema — a 400,
not FastAPI's 422; ``/metrics`` as text), no request may get a 5xx, and invalid data must
be rejected.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from research.retrieval import PassageIndex
from research.testbed.processes import free_port, launched

MODEL = "scripted"
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          negative_data_rejection]  # fmt: skip


@pytest.fixture(scope="module")
def scripted_server(model_path: Path, script_index: PassageIndex, tmp_path_factory: pytest.TempPathFactory):
    port = free_port()
    args = [sys.executable, "-m", "research.server.cli", "--model", str(model_path), "--index", script_index.uri]
    args += ["--served-model-name", MODEL, "--template", "instruct", "--engine", "transformers"]
    args += ["--port", str(port), "--max-tokens", "128", "--max-searches", "2"]
    log = tmp_path_factory.mktemp("openapi") / "research-serve.log"
    with launched(args, f"http://127.0.0.1:{port}/health", log, timeout=600):
        yield f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def api(scripted_server: str) -> Iterator[Any]:
    yield schemathesis.openapi.from_url(f"{scripted_server}/openapi.json")


schema = schemathesis.pytest.from_fixture("api")


@schema.hook
def map_body(context: Any, body: Any) -> Any:
    """Valid requests name the served model, so they reach generation instead of a 404."""
    if isinstance(body, dict) and isinstance(body.get("model"), str):
        body["model"] = MODEL
    return body


@schema.parametrize()
@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_route_answers_as_its_openapi_document_says(case: Any) -> None:
    case.call_and_validate(checks=CHECKS, timeout=120)
