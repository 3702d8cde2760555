"""LangChain's own standard tests for chat models (``langchain-tests``), run on :class:`ChatReSearch`.

The integration suite talks to a live ``research-serve`` subprocess found through
``$RESEARCH_URL``, as a user's would be. It sends free text ("Hello", "how are you",
conversations), so the server runs the canned model (:mod:`research.testbed.canned`),
which answers every prompt by construction (think, one search, answer) on any CPU,
over the toy world's LanceDB index. Every test passes or skips itself: tool
calling and structured output skip themselves (``ChatReSearch`` has no ``bind_tools``), as
do (with langchain-tests' own reasons; the suite forbids overriding a test to skip it):
per-call model override (``model_override_value``: the server serves one model),
``init_from_env`` (``ChatReSearch`` reads ``$RESEARCH_URL`` when it connects, not into an
attribute), serialization, multimodal inputs, JSON mode, and the recorded-HTTP (VCR)
streaming-time benchmark.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import pytest
from langchain_tests.integration_tests import ChatModelIntegrationTests
from langchain_tests.unit_tests import ChatModelUnitTests

from research.clients.langchain import ChatReSearch
from research.testbed.canned import canned_model
from research.testbed.models import engine_args
from research.testbed.processes import free_port, launched

MODEL_NAME = "canned"


@pytest.fixture(scope="module")
def canned_server_url(toy_index, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    args = [sys.executable, "-m", "research.server.cli", "--model", str(canned_model()), "--index", toy_index.uri]
    args += ["--served-model-name", MODEL_NAME, "--template", "base", "--search-top-k", "1", "--port", str(port)]
    args += engine_args("transformers", max_model_len=2048).cli_flags()
    log = tmp_path_factory.mktemp("langchain-standard") / "research-serve.log"
    with launched(args, f"http://127.0.0.1:{port}/health", log, timeout=300):
        yield f"http://127.0.0.1:{port}"


class TestChatReSearchUnit(ChatModelUnitTests):
    @property
    def chat_model_class(self) -> type[ChatReSearch]:
        return ChatReSearch

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"base_url": "http://127.0.0.1:8000", "model": MODEL_NAME}


class TestChatReSearchIntegration(ChatModelIntegrationTests):
    @pytest.fixture(autouse=True)
    def _server(self, canned_server_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("RESEARCH_URL", canned_server_url)

    @property
    def chat_model_class(self) -> type[ChatReSearch]:
        return ChatReSearch

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"model": MODEL_NAME}  # the server's default sampling: the canned reply does not depend on it
