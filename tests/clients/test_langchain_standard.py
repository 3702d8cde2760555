"""LangChain's own standard tests for chat models (``langchain-tests``), run on :class:`ChatReSearch`.

The integration suite talks to a live ``research-serve`` subprocess on the toy ReSearch
model (the one ``research-demo`` serves), found through ``$RESEARCH_URL`` as a user's
would be. Skipped, with the reason: what a model whose one tool is its own search
cannot do (tool calling and structured output skip themselves: ``ChatReSearch`` has no
``bind_tools``), and ``stop`` sequences, which the server refuses because they would
cut its search loop.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import pytest
from langchain_tests.integration_tests import ChatModelIntegrationTests
from langchain_tests.unit_tests import ChatModelUnitTests

from research.clients.langchain import ChatReSearch
from research.testbed.processes import free_port, launched
from research.testbed.serve import MODEL_NAME, toy_server

NO_STOP = "ChatReSearch refuses stop sequences: the server stops the model at its own search tags"


@pytest.fixture(scope="module")
def toy_server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    flags, _ = toy_server()
    port = free_port()
    args = [sys.executable, "-m", "research.server.cli", *flags, "--engine", "transformers", "--port", str(port)]
    log = tmp_path_factory.mktemp("langchain-standard") / "research-serve.log"
    with launched(args, f"http://127.0.0.1:{port}/health", log, timeout=900):
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
    def _server(self, toy_server_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("RESEARCH_URL", toy_server_url)

    @property
    def chat_model_class(self) -> type[ChatReSearch]:
        return ChatReSearch

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"model": MODEL_NAME}

    @pytest.mark.skip(reason=NO_STOP)
    def test_stop_sequence(self, model: Any) -> None: ...
