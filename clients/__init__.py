"""Clients of a ReSearch server, over HTTP only: :class:`Client`, :class:`AsyncClient`, ``research ask``, LangChain."""

from research.clients.client import (
    AsyncClient,
    Citation,
    Client,
    Content,
    Done,
    Event,
    Passage,
    Reasoning,
    Reply,
    Search,
    SearchIssued,
    SearchResults,
    Usage,
    api_base,
)

__all__ = [
    "AsyncClient",
    "Citation",
    "Client",
    "Content",
    "Done",
    "Event",
    "Passage",
    "Reasoning",
    "Reply",
    "Search",
    "SearchIssued",
    "SearchResults",
    "Usage",
    "api_base",
]
