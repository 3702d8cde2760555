"""The vocabulary of a response, from the search loop to the wire to the client: one class per concept.

The loop (:mod:`research.protocol.loop`) records each :class:`Search` with its
:class:`Passage` list; the server renders those same objects into its replies and
streams (and :class:`SearchIssued`, :class:`SearchDone`, :class:`Reasoning`,
:class:`Content`, :class:`Done` are what it renders); the clients
(:mod:`research.clients`) parse the replies back into them. It needs pydantic only, so
the light client install (no LanceDB, torch or FastAPI) imports it.
"""

from __future__ import annotations

import math
import re
from dataclasses import field
from typing import Any, Literal

from pydantic import BaseModel, computed_field, field_validator, model_serializer
from pydantic.dataclasses import dataclass

SearchMode = Literal["vector", "fts", "hybrid"]
"""How the index ranks passages: embeddings, BM25 full text, or both fused (reciprocal rank fusion)."""
SEARCH_MODES: tuple[SearchMode, ...] = ("vector", "fts", "hybrid")
MAX_K = 100
"""Most passages one query may ask for."""
DEFAULT_K = 5
"""Passages per search when nobody says (the paper's 5)."""

_SURROGATES = re.compile("[\ud800-\udfff]")


def valid_unicode(text: str) -> str:
    """``text`` with every lone surrogate (JSON can carry ``"\\ud800"``; no tokenizer or JSON reply takes it)
    replaced by U+FFFD.

    >>> valid_unicode("caf\\u00e9 \\ud800!") == "caf\\u00e9 \\ufffd!"
    True
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return _SURROGATES.sub("\ufffd", text)
    return text


@dataclass(frozen=True, slots=True)
class Passage:
    """A retrieved passage: ``contents`` is wiki-18's ``"Title"\\ntext``, exactly what the model reads.

    ``title`` and ``text`` are derived from it (and sent with it); ``url`` is the page a web search found
    it on (None for an index's passages).

    >>> p = Passage("7", '"Paris"\\nParis is the capital of France.', 0.9)
    >>> p.title, p.text
    ('Paris', 'Paris is the capital of France.')

    Whatever made it (a remote retriever's reply, a web page), its values are fit for JSON and a tokenizer:

    >>> broken = Passage("8", "A lone \\ud800.", float("nan"))
    >>> broken.contents == "A lone \\ufffd.", broken.score
    (True, None)
    """

    id: str
    contents: str
    score: float | None = None
    url: str | None = None

    @field_validator("id", "contents", "url")
    @classmethod
    def _valid_unicode(cls, text: str | None) -> str | None:
        """Whatever a retriever sent, the text passed on is valid Unicode (see :func:`valid_unicode`)."""
        return None if text is None else valid_unicode(text)

    @field_validator("score")
    @classmethod
    def _finite(cls, score: float | None) -> float | None:
        """A NaN or infinite score (one bad vector away) is no score: JSON has no such number."""
        return score if score is None or math.isfinite(score) else None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def title(self) -> str:
        return self.contents.split("\n", 1)[0].strip().strip('"')

    @computed_field  # type: ignore[prop-decorator]
    @property
    def text(self) -> str:
        """The body, title line excluded."""
        return self.contents.split("\n", 1)[1] if "\n" in self.contents else ""


class Search(BaseModel):
    """One search the model made: its query and the passages it was given (``index``: its place in the response)."""

    index: int
    query: str
    results: list[Passage] = []


class Citation(BaseModel):
    """A passage the response was given, once (``search_index``: the search that first returned it)."""

    id: str
    title: str
    score: float | None = None
    search_index: int
    url: str | None = None
    """The web page, for a web search's passage."""


def citations(searches: list[Search]) -> list[Citation]:
    """Every passage the response was given, once, in the order it first came back."""
    seen: dict[str, Citation] = {}
    for search in searches:
        for p in search.results:
            seen.setdefault(p.id, Citation(id=p.id, title=p.title, score=p.score, search_index=search.index, url=p.url))
    return list(seen.values())


class Usage(BaseModel):
    """OpenAI's usage, plus what retrieval added (retrieved tokens are not completion tokens)."""

    prompt_tokens: int
    completion_tokens: int
    """The model's own tokens; retrieved ones are ``retrieved_tokens``."""
    total_tokens: int
    # -- extensions --
    retrieved_tokens: int = 0
    searches: int = 0


FinishReason = Literal["stop", "length", "tool_calls"]


class TopLogprob(BaseModel):
    """One of the most likely tokens at a place (OpenAI's)."""

    token: str
    logprob: float
    bytes: list[int] | None = None


class TokenLogprob(TopLogprob):
    """A token the model generated, its log-probability and the most likely tokens there (OpenAI's)."""

    top_logprobs: list[TopLogprob] = []


class ChoiceLogprobs(BaseModel):
    """The log-probabilities of a choice's tokens: ``content`` over the answer text's, as OpenAI's; ``reasoning``
    (an extension, as vLLM's reasoning outputs) over the model's other tokens. Inserted tokens are in neither."""

    content: list[TokenLogprob] | None = None
    refusal: None = None
    reasoning: list[TokenLogprob] | None = None

    def add(self, other: ChoiceLogprobs) -> None:
        for name in ("content", "reasoning"):
            if more := getattr(other, name):
                setattr(self, name, (getattr(self, name) or []) + more)


class ToolCall(BaseModel):
    """A call of one of the client's own functions, left to the client to run (the ReCall protocol)."""

    id: str
    name: str
    arguments: str
    """The arguments, a JSON object as text (as OpenAI sends them)."""


class TokenIds(BaseModel):
    """What a choice carries for RL frameworks (``return_token_ids``; vLLM's names), None when not asked for."""

    token_ids: list[int] | None = None
    """Every token after the prompt, the model's and the inserted ones, in order."""
    inserted_mask: list[int] | None = None
    """1 where the server inserted the token (result blocks, tool responses), 0 where the model generated it."""
    token_logprobs: list[float | None] | None = None
    """With logprobs: each of the model's tokens' log-probability, aligned to ``token_ids`` (None where inserted)."""

    @staticmethod
    def of(reply: TokenIds) -> dict[str, Any]:
        """The fields of ``reply`` (a :class:`Reply`), to pass on to a reply choice."""
        return {name: getattr(reply, name) for name in TokenIds.model_fields}


class Reply(TokenIds):
    """A whole response (one choice of it): the answer and everything that led to it, and (:class:`TokenIds`) its
    token ids when asked for."""

    model: str
    index: int = 0
    """The choice (of a request's ``n``)."""
    answer: str | None = None
    """The model's final answer (its ``\\boxed{}``), None if it gave none."""
    content: str = ""
    reasoning: str = ""
    searches: list[Search] = []
    citations: list[Citation] = []
    usage: Usage | None = None
    tool_calls: list[ToolCall] = []
    """The client's functions the model called; the reply waits for their results (``finish_reason: tool_calls``)."""
    finish_reason: str | None = None
    stop_reason: str | int | None = None
    """``search_limit`` when the search budget ran out; the client's stop string or stop token that ended it."""
    logprobs: ChoiceLogprobs | None = None


# -- stream events: what happens during a response, in order ---------------------------------------


@dataclass(frozen=True, slots=True)
class Reasoning:
    """Response text before the answer (thinking, search tags, result blocks)."""

    text: str
    retrieved: bool = field(default=False, compare=False)
    """A result block fed back to the model (known server-side only: a chat stream does not mark it)."""
    choice: int = field(default=0, compare=False)
    """The choice it belongs to (of a request's ``n``)."""
    logprobs: ChoiceLogprobs | None = field(default=None, compare=False)
    """The log-probabilities of the model's tokens that wrote this text (when asked for)."""


@dataclass(frozen=True, slots=True)
class Content:
    """Response text of the answer (everything, tags included, with ``reasoning_format: raw``)."""

    text: str
    retrieved: bool = field(default=False, compare=False)
    choice: int = field(default=0, compare=False)
    logprobs: ChoiceLogprobs | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class SearchIssued:
    """The model closed ``</search>``: search number ``index`` starts."""

    index: int
    query: str
    choice: int = field(default=0, compare=False)


@dataclass(frozen=True, slots=True)
class SearchDone:
    """A search came back; its passages are appended to the response."""

    search: Search
    choice: int = field(default=0, compare=False)


@dataclass(frozen=True, slots=True)
class Done:
    """The response (one choice of it) is complete."""

    reply: Reply


Event = Reasoning | Content | SearchIssued | SearchDone | Done


class Delta(BaseModel):
    """A streamed delta: serialised with the fields that were set only, so it says what is new, nothing else."""

    @model_serializer(mode="wrap")
    def _only_set(self, handler: Any) -> dict[str, Any]:
        return {k: v for k, v in handler(self).items() if k in self.model_fields_set}


class SearchDelta(Delta):
    """One search in a streamed ``delta.searches``: the query first, then (same index) the results."""

    index: int
    query: str | None = None
    results: list[Passage] | None = None

    @classmethod
    def of(cls, event: SearchIssued | SearchDone) -> SearchDelta:
        """The delta of a search event: its query when issued, its results when done."""
        if isinstance(event, SearchIssued):
            return cls(index=event.index, query=event.query)
        return cls(index=event.search.index, results=event.search.results)


# -- the other routes' replies -----------------------------------------------------------------------


class QueryResult(BaseModel):
    query: str
    passages: list[Passage]


class SearchResponse(BaseModel):
    """``POST /v1/search``: the passages for each query, in the order asked."""

    object: Literal["list"] = "list"
    data: list[QueryResult]


# -- the drop-in retriever APIs: what Search-R1's and ReSearch's retrievers send (and ours, for their clients) --


class Document(BaseModel):
    """A passage as Search-R1's and ReSearch's retrievers send it: a wiki-18 row (``contents`` is ``"Title"\ntext``)."""

    id: str | int | None = None
    contents: str

    @classmethod
    def of(cls, passage: Passage) -> Document:
        return cls(id=passage.id, contents=passage.contents)

    def passage(self, score: float | None = None) -> Passage:
        return Passage("" if self.id is None else str(self.id), self.contents, score)


class ScoredDocument(BaseModel):
    document: Document
    score: float | None = None


class RetrieveReply(BaseModel):
    """Search-R1's ``POST /retrieve`` reply: per query, its documents (with scores when ``return_scores``)."""

    result: list[list[ScoredDocument]] | list[list[Document]]

    def passages(self) -> list[list[Passage]]:
        return [
            [d.document.passage(d.score) if isinstance(d, ScoredDocument) else d.passage() for d in docs]
            for docs in self.result
        ]


ReSearchReply = list[Document] | list[list[Document] | list[float | None]]
"""ReSearch's ``POST /search`` reply: the documents, or ``[documents, scores]`` with ``return_score``."""
ReSearchBatchReply = list[list[Document]] | list[list[list[Document]] | list[list[float | None]]]
"""ReSearch's ``POST /batch_search`` reply: documents per query, or ``[documents, scores]`` with ``return_score``."""


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "research"
    template: str | None = None
    """The prompt template the model was trained with (``base`` or ``instruct``)."""
    protocol: str | None = None
    """The search protocol the model was trained with (``research``, ``search-r1`` or ``recall``)."""


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class Health(BaseModel):
    """``GET /health``: ``ok``, or ``unhealthy`` with what failed (engine, retriever) and why."""

    status: Literal["ok", "unhealthy"]
    model: str
    running: int
    """Generation requests in flight."""
    engine: str | None = None
    retriever: str | None = None
