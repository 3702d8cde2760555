"""LangChain integrations: the whole search-and-reason model as a tool, the index as a retriever.

from research.clients.langchain import ReSearchTool, ReSearchRetriever

tool = ReSearchTool(base_url="http://127.0.0.1:8000/v1")
tool.invoke({"question": "Who founded the company that makes the Lumet 7?"})

retriever = ReSearchRetriever(base_url="http://127.0.0.1:8000", k=5)
retriever.invoke("Lumet 7")                        # list[Document] with id, title, score metadata
"""

from __future__ import annotations

from typing import Any

import httpx
import openai
from langchain_core.callbacks import AsyncCallbackManagerForRetrieverRun, CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from langchain_core.tools import BaseTool
from pydantic import BaseModel, Field

from research.retrieval.index import SearchMode


class _Question(BaseModel):
    question: str = Field(description="a factual question, in full; the tool searches Wikipedia itself")


class ReSearchTool(BaseTool):
    """Ask a ReSearch server: it searches Wikipedia as often as it needs, then answers."""

    name: str = "research"
    description: str = (
        "Answers factual and multi-hop questions by reasoning and searching Wikipedia. "
        "Input: the question. Output: the answer and the titles of the passages it used."
    )
    args_schema: type[BaseModel] = _Question
    base_url: str = "http://127.0.0.1:8000/v1"
    api_key: str = "unused"
    model: str | None = None
    search_top_k: int | None = None
    """Passages per search; None: the server's default (what its model was trained with)."""
    max_searches: int | None = None

    def _request(self, question: str) -> dict[str, Any]:
        body: dict[str, Any] = {}
        if self.search_top_k is not None:
            body["search_top_k"] = self.search_top_k
        if self.max_searches is not None:
            body["max_searches"] = self.max_searches
        return {
            "model": self.model or "",
            "messages": [{"role": "user", "content": question}],
            "temperature": 0,
            "extra_body": body,
        }

    @staticmethod
    def _render(reply: Any) -> str:
        message = reply.choices[0].message.model_extra or {}
        answer = message.get("answer") or (reply.choices[0].message.content or "").strip()
        sources = "; ".join(c["title"] for c in message.get("citations", []))
        return f"{answer}\n(sources: {sources})" if sources else answer

    def _model(self, client: openai.OpenAI) -> str:
        return self.model or client.models.list().data[0].id

    def _run(self, question: str, **_: Any) -> str:
        with openai.OpenAI(base_url=self.base_url, api_key=self.api_key) as client:
            request = {**self._request(question), "model": self._model(client)}
            return self._render(client.chat.completions.create(**request))

    async def _arun(self, question: str, **_: Any) -> str:
        async with openai.AsyncOpenAI(base_url=self.base_url, api_key=self.api_key) as client:
            model = self.model or (await client.models.list()).data[0].id
            return self._render(await client.chat.completions.create(**{**self._request(question), "model": model}))


class ReSearchRetriever(BaseRetriever):
    """Passages from the server's ``/v1/search`` (or ``research-index serve``) as LangChain documents."""

    base_url: str = "http://127.0.0.1:8000"
    api_key: str = "unused"
    k: int = 5
    mode: SearchMode = "vector"

    def _body(self, query: str) -> dict[str, Any]:
        return {"queries": [query], "k": self.k, "mode": self.mode}

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    @staticmethod
    def _documents(reply: httpx.Response) -> list[Document]:
        reply.raise_for_status()
        passages = reply.json()["data"][0]["passages"]
        return [
            Document(page_content=p["text"], id=p["id"], metadata={"title": p["title"], "score": p["score"]})
            for p in passages
        ]

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        url = f"{self.base_url.rstrip('/')}/v1/search"
        return self._documents(httpx.post(url, json=self._body(query), headers=self._headers(), timeout=60))

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun
    ) -> list[Document]:
        async with httpx.AsyncClient(base_url=self.base_url, headers=self._headers(), timeout=60) as http:
            return self._documents(await http.post("/v1/search", json=self._body(query)))
