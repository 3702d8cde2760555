"""Responses and conversations as the store keeps them: what a Responses request stores (``store``), what a new
turn continues from (``previous_response_id``, ``conversation``), and the item and list shapes the routes send.

A response's ``context`` is every input item the model was shown (the turns it continues
and its own input); a later turn with ``previous_response_id`` is shown that context, then
the response's output items, then its own input: the prompt the client would have made by
sending them all in ``input``. Reads name the caller's owner (:mod:`research.server.access`):
another key's response is absent, by the same query, with the same 404.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

from fastapi import Query
from pydantic import BaseModel

from research.http_errors import APIError
from research.server.background import Background
from research.server.response_items import ResponseObject
from research.server.store import Store, StoredResponse

MAX_PAGE = 100
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE, description="items in a page")]


def not_found(id: str, kind: Literal["response", "conversation"] = "response") -> APIError:
    """The 404 for an id that is absent, deleted, expired or another key's: one message for all."""
    return APIError(404, f"no {kind} with id {id!r}", param=f"{kind}_id", code=f"{kind}_not_found")


def item_id(kind: str) -> str:
    return f"{kind}_{uuid.uuid4().hex}"


def as_item(item: BaseModel | dict[str, Any]) -> dict[str, Any]:
    """An input item as stored and listed: an id (``msg_…`` for a message), a message's content as parts."""
    out = item.model_dump(mode="json", exclude_none=True) if isinstance(item, BaseModel) else dict(item)
    out.setdefault("type", "message")
    if out["type"] == "message":
        out.setdefault("id", item_id("msg"))
        if isinstance(out.get("content"), str):
            kind = "output_text" if out.get("role") == "assistant" else "input_text"
            out["content"] = [{"type": kind, "text": out["content"]}]
        out.setdefault("status", "completed")
    else:
        out.setdefault("id", item_id(out["type"].split("_")[0]))
    return out


def output_items(response: ResponseObject) -> list[dict[str, Any]]:
    return [item.model_dump(mode="json") for item in response.output]


def page(items: list[dict[str, Any]], after: str | None, limit: int, order: str) -> dict[str, Any]:
    """OpenAI's list object for ``items`` (oldest first), from after the item ``after``, ``limit`` long."""
    ordered = items if order == "asc" else items[::-1]
    if after is not None:
        ids = [item["id"] for item in ordered]
        if after not in ids:
            raise APIError(400, f"after: no item {after!r} in this list", param="after", code="invalid_value")
        ordered = ordered[ids.index(after) + 1 :]
    return listing(ordered[:limit], more=len(ordered) > limit)


def listing(items: list[dict[str, Any]], *, more: bool) -> dict[str, Any]:
    """OpenAI's list object over ``items``."""
    return {
        "object": "list", "data": items, "first_id": items[0]["id"] if items else None,
        "last_id": items[-1]["id"] if items else None, "has_more": more,
    }  # fmt: skip


def history_messages(items: list[dict[str, Any]]) -> int:
    """Messages among stored items (what a ``context_length_exceeded`` counts as turns)."""
    return sum(1 for item in items if item.get("type", "message") == "message")


class ResponseRecords:
    """Responses as the store keeps them: history for a new turn, rows written at start and end."""

    def __init__(self, store: Store, background: Background, *, write_timeout: float = 30.0) -> None:
        self.store, self.background, self.write_timeout = store, background, write_timeout

    async def find(self, id: str, owner: str) -> StoredResponse:
        row = await self.store.response(id, owner)
        if row is None:
            raise not_found(id)
        return row

    async def history(self, owner: str, previous: str | None, conversation: str | None) -> list[dict[str, Any]]:
        """The items a new turn continues from: the previous response's context and output, or the conversation's."""
        if previous is not None:
            row = await self.find(previous, owner)
            return [*row.context, *row.body.get("output", [])]
        if conversation is not None:
            if await self.store.conversation(conversation, owner) is None:
                raise not_found(conversation, "conversation")
            items, _ = await self.store.items(conversation)
            return items
        return []

    async def start(self, owner: str, response: ResponseObject, context: list[dict[str, Any]],
                    own: list[dict[str, Any]]) -> None:  # fmt: skip
        """Store ``response`` as it starts (a 503 if the store is down: nothing runs that could not be kept)."""
        conversation = (response.conversation or {}).get("id")
        await self.store.add_response(
            owner, response.model_dump(mode="json"), background=response.background, context=context,
            input_items=own, conversation_id=conversation, lease_owner=self.background.front,
            lease_until=self.background.lease_until(),
        )  # fmt: skip

    async def end(self, owner: str, response: ResponseObject, own: list[dict[str, Any]]) -> None:
        """Store ``response`` as it ended; a finished turn joins its conversation (its input, then its output)."""
        await self.store.finish_response(response.id, response.model_dump(mode="json"))
        await self.add_to_conversation(owner, response, own)

    async def add_to_conversation(self, owner: str, response: ResponseObject, own: list[dict[str, Any]]) -> None:
        conversation = (response.conversation or {}).get("id")
        if conversation and response.status in ("completed", "incomplete"):
            await self.store.add_items(conversation, owner, [*own, *output_items(response)])
