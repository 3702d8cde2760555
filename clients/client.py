"""One client for a ReSearch server: typed answers, typed stream events, and passage search.

    from research.clients import Client

    client = Client()                                  # $RESEARCH_URL or http://127.0.0.1:8000
    reply = client.ask("Who founded the company that makes the Lumet 7?")
    reply.answer, reply.searches[0].query, reply.citations

    for event in client.stream("..."):                 # Reasoning, SearchIssued, SearchDone, Content, Done
        ...

    client.search(["Lumet 7"], k=3)                    # passages from the server's index
    client.passage("1234")                             # one passage by its id

It speaks HTTP only, through the ``openai`` SDK (whose retries, timeouts and typed
errors it keeps: ``openai.APIConnectionError``, ``openai.NotFoundError`` ...), so it
needs none of the server's stack; what it returns are the server's own types (:mod:`research.wire`).
:class:`AsyncClient` is the same for ``asyncio``.

A server URL may be given with or without ``/v1`` (``http://host:8000``,
``http://host:8000/v1/``): :func:`api_base` turns any of them into the API base.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import openai

from research.wire import (
    Citation,
    Content,
    Done,
    Event,
    Passage,
    Reasoning,
    Reply,
    Search,
    SearchDelta,
    SearchDone,
    SearchIssued,
    SearchMode,
    SearchResponse,
    Usage,
)

DEFAULT_URL = "http://127.0.0.1:8000"
Messages = str | Sequence[dict[str, Any]]
"""A question, or a whole chat (OpenAI message dicts; the last is the user's)."""


def api_base(url: str | None = None) -> str:
    """The server's ``/v1`` base URL from any of its URLs (``$RESEARCH_URL`` or the local default when None).

    >>> api_base("http://h:8000"), api_base("http://h:8000/v1/")
    ('http://h:8000/v1', 'http://h:8000/v1')
    """
    url = (url or os.environ.get("RESEARCH_URL") or DEFAULT_URL).rstrip("/")
    return url.removesuffix("/v1") + "/v1"


def find_api_key(key: str | None = None) -> str:
    """``key``, else ``$RESEARCH_API_KEY``, else a placeholder (a server without ``--api-key`` ignores it)."""
    return key or os.environ.get("RESEARCH_API_KEY") or "unused"


# -- the wire, both ways (shared by Client and AsyncClient) ----------------------------------


def chat_request(
    model: str,
    question: Messages,
    *,
    stream: bool,
    search_top_k: int | None = None,
    max_searches: int | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Keyword arguments for ``chat.completions.create``; ``options`` are OpenAI fields (temperature, max_tokens...)."""
    messages = [{"role": "user", "content": question}] if isinstance(question, str) else list(question)
    extra = {k: v for k, v in (("search_top_k", search_top_k), ("max_searches", max_searches)) if v is not None}
    extra = {**(options.pop("extra_body", None) or {}), **extra}  # our fields ride in the SDK's extra_body
    request: dict[str, Any] = {"model": model, "messages": messages, "stream": stream, **options}
    if stream:
        request["stream_options"] = {"include_usage": True}
    return {**request, "extra_body": extra} if extra else request


def reply_of(completion: Any) -> Reply:
    """A :class:`Reply` from a non-streamed chat completion (our extension fields ride in ``model_extra``)."""
    choice = completion.choices[0]
    fields = choice.message.model_extra or {}
    return Reply(
        model=completion.model,
        answer=fields.get("answer"),
        content=choice.message.content or "",
        reasoning=fields.get("reasoning") or "",
        searches=fields.get("searches") or [],
        citations=fields.get("citations") or [],
        usage=completion.usage.model_dump() if completion.usage else None,
        finish_reason=choice.finish_reason,
        stop_reason=(choice.model_extra or {}).get("stop_reason"),
    )


@dataclass
class StreamReader:
    """Turns streamed chat chunks into :class:`Event` objects, assembling the :class:`Reply` as it goes."""

    model: str
    reply: Reply = field(init=False)

    def __post_init__(self) -> None:
        self.reply = Reply(model=self.model)

    def feed(self, chunk: Any) -> list[Event]:
        events: list[Event] = []
        reply = self.reply
        if chunk.usage is not None:
            reply.usage = Usage.model_validate(chunk.usage.model_dump())
        for choice in chunk.choices:
            fields = choice.delta.model_extra or {}
            if text := fields.get("reasoning"):
                reply.reasoning += text
                events.append(Reasoning(text))
            for delta in map(SearchDelta.model_validate, fields.get("searches") or []):  # query, then results
                if delta.query is not None:
                    reply.searches.append(Search(index=delta.index, query=delta.query))
                    events.append(SearchIssued(delta.index, delta.query))
                if delta.results is not None:
                    search = reply.searches[delta.index]
                    search.results = delta.results
                    events.append(SearchDone(search))
            if text := choice.delta.content:
                reply.content += text
                events.append(Content(text))
            if choice.finish_reason is not None:
                reply.finish_reason = choice.finish_reason
                reply.stop_reason = (choice.model_extra or {}).get("stop_reason")
                reply.answer = fields.get("answer")
                reply.citations = [Citation.model_validate(c) for c in fields.get("citations") or []]
        return events


def search_body(queries: Sequence[str], k: int | None, mode: SearchMode) -> dict[str, Any]:
    if isinstance(queries, str):
        raise TypeError("queries is a list of strings; for one query pass [query]")
    return {"queries": list(queries), "mode": mode, **({"k": k} if k is not None else {})}


def passages_of(body: Any) -> list[list[Passage]]:
    return [result.passages for result in SearchResponse.model_validate(body).data]


def passage_path(passage_id: str) -> str:
    """``GET /v1/passages/{id}``'s path, the id escaped (wiki-18 ids are numbers; others may hold a ``/``)."""
    return f"/passages/{quote(passage_id, safe='')}"


def passage_of(body: Any) -> Passage:
    return Passage(body["id"], body["contents"], body.get("score"), body.get("url"))


# -- the clients ----------------------------------------------------------------------------


class _Connection:
    """The SDK client both clients wrap (``self.openai``) and the model they ask."""

    _sdk: type[openai.OpenAI] | type[openai.AsyncOpenAI]

    def __init__(
        self,
        url: str | None = None,
        *,
        api_key: str | None = None,
        model: str | None = None,
        timeout: float = 600.0,
        max_retries: int = 2,
    ) -> None:
        self.openai: Any = self._sdk(
            base_url=api_base(url), api_key=find_api_key(api_key), timeout=timeout, max_retries=max_retries
        )
        self._model = model


class Client(_Connection):
    """A ReSearch server, synchronously: :meth:`ask`, :meth:`stream`, :meth:`search`, :meth:`passage`.

    ``url``: the server (with or without ``/v1``; default ``$RESEARCH_URL``, then
    ``http://127.0.0.1:8000``). ``model``: default the first the server lists.
    ``max_retries``: the SDK's retries with backoff on connection errors, 408, 429 and 5xx.
    """

    _sdk = openai.OpenAI

    def model(self) -> str:
        """The model asked: the one given, else the first the server serves (asked once)."""
        if self._model is None:
            self._model = self.openai.models.list().data[0].id
        return self._model

    def ask(self, question: Messages, *, model: str | None = None, **options: Any) -> Reply:
        """Ask and wait for the whole :class:`Reply`; ``options``: ``search_top_k``, ``max_searches``, OpenAI fields."""
        request = chat_request(model or self.model(), question, stream=False, **options)
        return reply_of(self.openai.chat.completions.create(**request))

    def stream(self, question: Messages, *, model: str | None = None, **options: Any) -> Iterator[Event]:
        """Ask and get :class:`Event` objects as the model reasons and searches; the last is :class:`Done`."""
        reader = StreamReader(model or self.model())
        request = chat_request(reader.model, question, stream=True, **options)
        with self.openai.chat.completions.create(**request) as chunks:
            for chunk in chunks:
                yield from reader.feed(chunk)
        yield Done(reader.reply)

    def search(
        self, queries: Sequence[str], *, k: int | None = None, mode: SearchMode = "vector"
    ) -> list[list[Passage]]:
        """The top ``k`` passages (default: the server's) for each query, from the server's ``/v1/search``."""
        return passages_of(self.openai.post("/search", body=search_body(queries, k, mode), cast_to=object))

    def passage(self, passage_id: str) -> Passage:
        """The passage with this id (as a search returned it) from the server's index; ``openai.NotFoundError``
        when it has none."""
        return passage_of(self.openai.get(passage_path(passage_id), cast_to=object))

    def close(self) -> None:
        self.openai.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncClient(_Connection):
    """:class:`Client` for ``asyncio``: ``await ask()``, ``async for event in stream()``, ``await search()``,
    ``await passage()``."""

    _sdk = openai.AsyncOpenAI

    async def model(self) -> str:
        if self._model is None:
            self._model = (await self.openai.models.list()).data[0].id
        return self._model

    async def ask(self, question: Messages, *, model: str | None = None, **options: Any) -> Reply:
        request = chat_request(model or await self.model(), question, stream=False, **options)
        return reply_of(await self.openai.chat.completions.create(**request))

    async def stream(self, question: Messages, *, model: str | None = None, **options: Any) -> AsyncIterator[Event]:
        reader = StreamReader(model or await self.model())
        request = chat_request(reader.model, question, stream=True, **options)
        async with await self.openai.chat.completions.create(**request) as chunks:
            async for chunk in chunks:
                for event in reader.feed(chunk):
                    yield event
        yield Done(reader.reply)

    async def search(
        self, queries: Sequence[str], *, k: int | None = None, mode: SearchMode = "vector"
    ) -> list[list[Passage]]:
        return passages_of(await self.openai.post("/search", body=search_body(queries, k, mode), cast_to=object))

    async def passage(self, passage_id: str) -> Passage:
        return passage_of(await self.openai.get(passage_path(passage_id), cast_to=object))

    async def close(self) -> None:
        await self.openai.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
