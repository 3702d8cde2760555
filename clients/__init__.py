"""Clients of a ReSearch server, over HTTP only: :class:`Client`, :class:`AsyncClient`, ``research ask``, LangChain.

What they return are the server's own types (:mod:`research.wire`), re-exported here.
"""

from research.clients.client import AsyncClient, Client, api_base
from research.wire import (
    Citation,
    Content,
    Done,
    Event,
    Passage,
    Reasoning,
    Reply,
    Search,
    SearchDone,
    SearchIssued,
    Usage,
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
    "SearchDone",
    "SearchIssued",
    "Usage",
    "api_base",
]
