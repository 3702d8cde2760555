"""LangChain integrations: the model as a chat model and as a tool, the index as a retriever.

    from research.clients.langchain import ChatReSearch, ReSearchRetriever, ReSearchTool

    chat = ChatReSearch(base_url="http://127.0.0.1:8000")
    message = chat.invoke("Who founded the company that makes the Lumet 7?")
    message.text                                        # the answer text
    message.content_blocks[0]                           # {"type": "reasoning", "reasoning": "<think>..."}
    message.response_metadata["searches"]               # [{"index", "query", "results": [passages]}]
    message.response_metadata["citations"], message.response_metadata["answer"]

    tool = ReSearchTool(base_url="http://127.0.0.1:8000")    # for agents: the answer, passages as artifact
    retriever = ReSearchRetriever(base_url="http://127.0.0.1:8000", k=5)
    retriever.invoke("Lumet 7")                        # list[Document] with id, title, score metadata

Every class takes the server's URL with or without ``/v1`` (default ``$RESEARCH_URL``,
then ``http://127.0.0.1:8000``) and its key (default ``$RESEARCH_API_KEY``); all talk
to it through :class:`research.clients.Client`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any, Literal

import openai
from langchain_core.callbacks import (
    AsyncCallbackManagerForLLMRun,
    AsyncCallbackManagerForRetrieverRun,
    CallbackManagerForLLMRun,
    CallbackManagerForRetrieverRun,
)
from langchain_core.documents import Document
from langchain_core.language_models import BaseChatModel, LangSmithParams
from langchain_core.language_models.chat_models import agenerate_from_stream, generate_from_stream
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, convert_to_openai_messages
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.retrievers import BaseRetriever
from langchain_core.tools import BaseTool, ToolException
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, SecretStr

from research.clients.client import AsyncClient, Client
from research.wire import Content, Done, Event, Passage, Reasoning, Reply, SearchDone, SearchIssued, SearchMode, Usage


class _ServerFields(BaseModel):
    """The server a LangChain class talks to, and its (lazily made) clients."""

    base_url: str | None = None
    """The server, with or without ``/v1``; default ``$RESEARCH_URL``, then ``http://127.0.0.1:8000``."""
    api_key: SecretStr | None = None
    """The server's key; default ``$RESEARCH_API_KEY``."""
    timeout: float = 600.0
    max_retries: int = 2
    _client: Client | None = PrivateAttr(default=None)
    _async_client: AsyncClient | None = PrivateAttr(default=None)

    def _options(self) -> dict[str, Any]:
        key = self.api_key.get_secret_value() if self.api_key else None
        return {"api_key": key, "timeout": self.timeout, "max_retries": self.max_retries}

    def client(self) -> Client:
        if self._client is None:
            self._client = Client(self.base_url, **self._options())
        return self._client

    def async_client(self) -> AsyncClient:
        if self._async_client is None:
            self._async_client = AsyncClient(self.base_url, **self._options())
        return self._async_client


# -- the chat model -----------------------------------------------------------------------------


def _usage(usage: Usage | None) -> UsageMetadata | None:
    if usage is None:
        return None
    return {"input_tokens": usage.prompt_tokens, "output_tokens": usage.completion_tokens,
            "total_tokens": usage.total_tokens}  # fmt: skip


def _metadata(reply: Reply) -> dict[str, Any]:
    """What ends a response: the model, why it stopped, its answer and the passages it was given."""
    return {
        "model_name": reply.model,
        "finish_reason": reply.finish_reason,
        "stop_reason": reply.stop_reason,
        "answer": reply.answer,
        "citations": [c.model_dump() for c in reply.citations],
    }


def message_of(reply: Reply) -> AIMessage:
    """An ``AIMessage``: the answer text as content, the reasoning as a reasoning block, the rest as metadata."""
    return AIMessage(
        content=reply.content,
        additional_kwargs={"reasoning_content": reply.reasoning} if reply.reasoning else {},
        response_metadata={**_metadata(reply), "searches": [s.model_dump() for s in reply.searches]},
        usage_metadata=_usage(reply.usage),
    )


def chunk_of(event: Event) -> AIMessageChunk:
    """One streamed event as a chunk; the chunks add up to :func:`message_of` of the reply.

    Searches merge by their ``index`` (LangChain merges list items that share one): the
    query arrives first, its passages later.
    """
    match event:
        case Reasoning(text):
            return AIMessageChunk(content="", additional_kwargs={"reasoning_content": text})
        case Content(text):
            return AIMessageChunk(content=text)
        case SearchIssued(index, query):
            return AIMessageChunk(content="", response_metadata={"searches": [{"index": index, "query": query}]})
        case SearchDone(search):
            found = [search.model_dump(exclude={"query"})]  # the query came with SearchIssued
            return AIMessageChunk(content="", response_metadata={"searches": found})
        case Done(reply):
            return AIMessageChunk(
                content="",
                response_metadata=_metadata(reply),
                usage_metadata=_usage(reply.usage),
                chunk_position="last",
            )
    raise TypeError(f"not a stream event: {event!r}")


class ChatReSearch(_ServerFields, BaseChatModel):
    """A ReSearch server as a LangChain chat model.

    The message's content is the answer text; the reasoning (searches and the passages
    fed back included) is its standard reasoning block (``additional_kwargs
    ["reasoning_content"]``); ``response_metadata`` has the ``answer``, the ``searches``
    with their passages and the ``citations``. Invoke, stream (the chunks add up to the
    same message), their async forms and batch all work.

    ``stop`` sequences end the answer where the model writes one (never inside a search
    query: the server's loop skips those). Not supported, because a search model cannot do
    them: tool calling and structured output (the model's one tool is its search, run on the
    server).
    """

    model_config = ConfigDict(populate_by_name=True)

    model_name: str | None = Field(default=None, alias="model")
    """The served model; default the first the server lists."""
    temperature: float | None = None
    max_tokens: int | None = None
    """Response budget, model and retrieved tokens together (default: the server's)."""
    stop: list[str] | None = None
    streaming: bool = False
    """``invoke`` streams underneath (and calls back token by token)."""
    search_top_k: int | None = None
    """Passages per search (default: the server's, what its model was trained with)."""
    max_searches: int | None = None
    """Searches allowed per response; 0 answers without searching (default: the server's)."""

    @property
    def _llm_type(self) -> str:
        return "research"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"base_url": self.base_url, "model": self.model_name, "search_top_k": self.search_top_k,
                "max_searches": self.max_searches}  # fmt: skip

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = LangSmithParams(
            ls_provider="research",
            ls_model_name=kwargs.get("model") or self.model_name or "research",
            ls_model_type="chat",
            ls_temperature=kwargs.get("temperature", self.temperature),
        )
        if (max_tokens := kwargs.get("max_tokens", self.max_tokens)) is not None:
            params["ls_max_tokens"] = max_tokens
        if stop := stop or self.stop:
            params["ls_stop"] = stop
        return params

    def _request(self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any]) -> dict[str, Any]:
        options = {"model": self.model_name, "temperature": self.temperature, "max_tokens": self.max_tokens,
                   "search_top_k": self.search_top_k, "max_searches": self.max_searches, "stop": stop or self.stop,
                   **kwargs}  # fmt: skip
        return {"question": convert_to_openai_messages(messages), **{k: v for k, v in options.items() if v is not None}}

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        if self.streaming:
            return generate_from_stream(self._stream(messages, stop, run_manager, **kwargs))
        reply = self.client().ask(**self._request(messages, stop, kwargs))
        return ChatResult(generations=[ChatGeneration(message=message_of(reply))])

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        if self.streaming:
            return await agenerate_from_stream(self._astream(messages, stop, run_manager, **kwargs))
        reply = await self.async_client().ask(**self._request(messages, stop, kwargs))
        return ChatResult(generations=[ChatGeneration(message=message_of(reply))])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        for event in self.client().stream(**self._request(messages, stop, kwargs)):
            chunk = ChatGenerationChunk(message=chunk_of(event))
            if run_manager and isinstance(event, Content):
                run_manager.on_llm_new_token(event.text, chunk=chunk)
            yield chunk

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        async for event in self.async_client().stream(**self._request(messages, stop, kwargs)):
            chunk = ChatGenerationChunk(message=chunk_of(event))
            if run_manager and isinstance(event, Content):
                await run_manager.on_llm_new_token(event.text, chunk=chunk)
            yield chunk


# -- the tool -------------------------------------------------------------------------------------


class _Question(BaseModel):
    question: str = Field(description="a factual question, in full; the tool searches Wikipedia itself")


class ReSearchTool(_ServerFields, BaseTool):
    """Ask a ReSearch server: it searches Wikipedia as often as it needs, then answers.

    The tool's content is the answer with its sources' titles; its artifact (with
    ``response_format="content_and_artifact"``, the default) is the whole reply: the
    searches with their passages, the citations and the reasoning. A server error is a
    ``ToolException``, so an agent with ``handle_tool_error=True`` reads it and goes on.
    """

    name: str = "research"
    description: str = (
        "Answers factual and multi-hop questions by reasoning and searching Wikipedia. "
        "Input: the question. Output: the answer and the titles of the passages it used."
    )
    args_schema: type[BaseModel] = _Question
    response_format: Literal["content", "content_and_artifact"] = "content_and_artifact"
    model: str | None = None
    search_top_k: int | None = None
    """Passages per search; None: the server's default (what its model was trained with)."""
    max_searches: int | None = None

    def _ask(self) -> dict[str, Any]:
        options = {"model": self.model, "search_top_k": self.search_top_k, "max_searches": self.max_searches}
        return {"temperature": 0, **{k: v for k, v in options.items() if v is not None}}

    def _result(self, reply: Reply) -> tuple[str, dict[str, Any]]:
        answer = reply.answer or reply.content.strip() or "(the model stopped without an answer)"
        sources = "; ".join(c.title for c in reply.citations)
        return (f"{answer}\n(sources: {sources})" if sources else answer), reply.model_dump()

    def _error(self, exc: openai.APIError) -> ToolException:
        return ToolException(f"the ReSearch server failed to answer: {exc.message}")

    def _run(self, question: str, **_: Any) -> tuple[str, dict[str, Any]]:
        try:
            return self._result(self.client().ask(question, **self._ask()))
        except openai.APIError as exc:
            raise self._error(exc) from exc

    async def _arun(self, question: str, **_: Any) -> tuple[str, dict[str, Any]]:
        try:
            return self._result(await self.async_client().ask(question, **self._ask()))
        except openai.APIError as exc:
            raise self._error(exc) from exc


# -- the retriever --------------------------------------------------------------------------------


def documents(passages: Sequence[Passage]) -> list[Document]:
    return [Document(page_content=p.text, id=p.id, metadata={"title": p.title, "score": p.score}) for p in passages]


class ReSearchRetriever(_ServerFields, BaseRetriever):
    """Passages from the server's ``/v1/search`` (or ``research-index serve``) as LangChain documents."""

    k: int | None = None
    """Passages per query (default: the server's)."""
    mode: SearchMode = "vector"

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        return documents(self.client().search([query], k=self.k, mode=self.mode)[0])

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun
    ) -> list[Document]:
        return documents((await self.async_client().search([query], k=self.k, mode=self.mode))[0])
