"""LangChain's own standard tests for chat models (``langchain-tests``), run on :class:`ChatReSearch`.

The integration suite talks to a live ``research-serve`` subprocess on the toy ReSearch
model (the one ``research-demo`` serves), found through ``$RESEARCH_URL`` as a user's
would be. Skipped or expected to fail, with the reason: what a model whose one tool is its own
search cannot do (tool calling and structured output skip themselves: ``ChatReSearch``
has no ``bind_tools``); ``stop`` sequences, which the server refuses because they would
cut its search loop; and two tests whose off-topic greetings the toy model may not answer.
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
OFF_TOPIC = (
    "the toy model (1.1M parameters, trained only on toy-world questions) does not always reach an answer to an "
    "off-topic greeting; the reply's content is then empty and its text is in the reasoning, by design"
)


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
        # Greedy: sampled at the server's default temperature (1.0), the toy model's reply to an off-topic
        # "Hello" now and then ends without an answer, and four tests assert its text (one failed so, in CI).
        return {"model": MODEL_NAME, "temperature": 0}

    @pytest.mark.xfail(reason=NO_STOP, raises=ValueError, strict=True)
    def test_stop_sequence(self, model: Any) -> None:
        super().test_stop_sequence(model)

    @pytest.mark.xfail(reason=OFF_TOPIC, strict=False)
    async def test_abatch(self, model: Any) -> None:
        await super().test_abatch(model)

    @pytest.mark.xfail(reason=OFF_TOPIC, strict=False)
    def test_message_with_name(self, model: Any) -> None:
        super().test_message_with_name(model)
