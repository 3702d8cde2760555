"""The Conversations API: ``POST/GET/DELETE /v1/conversations[/{id}]`` and its ``items`` routes, as OpenAI documents
them. A Responses request with ``conversation`` is shown the conversation's items before its input, and its input
and output items join the conversation when it ends (:mod:`research.server.stored_responses`).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from research.http_errors import APIError, errors
from research.server.access import owner_of
from research.server.records import Limit, ResponseRecords, as_item, item_id, listing, not_found
from research.server.requests import Strict
from research.server.responses import InputItem

MAX_ITEMS = 20
"""Items one create or add may carry (OpenAI's limit)."""
Metadata = Annotated[dict[str, Annotated[str, Field(max_length=512)]], Field(max_length=16)]


class ConversationCreate(Strict):
    items: Annotated[list[InputItem], Field(max_length=MAX_ITEMS)] | None = None
    metadata: Metadata | None = None


class ConversationUpdate(Strict):
    metadata: Metadata


class ItemsCreate(Strict):
    items: Annotated[list[InputItem], Field(min_length=1, max_length=MAX_ITEMS)]


class Conversation(BaseModel):
    id: str
    object: Literal["conversation"] = "conversation"
    created_at: int
    metadata: dict[str, str]


class ConversationDeleted(BaseModel):
    id: str
    object: Literal["conversation.deleted"] = "conversation.deleted"
    deleted: bool = True


def router(records: ResponseRecords) -> APIRouter:
    """The conversations' routes over the store."""
    routes = APIRouter(tags=["conversations"])
    store = records.store

    async def found(id: str, owner: str) -> Conversation:
        conversation = await store.conversation(id, owner)
        if conversation is None:
            raise not_found(id, "conversation")
        created, meta = conversation
        return Conversation(id=id, created_at=int(created), metadata=meta)

    @routes.post("/v1/conversations", responses=errors(400, 503))
    async def create(body: ConversationCreate, request: Request) -> Conversation:
        id, meta = item_id("conv"), body.metadata or {}
        created = await store.add_conversation(id, owner_of(request), meta, [as_item(i) for i in body.items or []])
        return Conversation(id=id, created_at=int(created), metadata=meta)

    @routes.get("/v1/conversations/{conversation_id}", responses=errors(404, 503))
    async def retrieve(conversation_id: str, request: Request) -> Conversation:
        return await found(conversation_id, owner_of(request))

    @routes.post("/v1/conversations/{conversation_id}", responses=errors(400, 404, 503))
    async def update(conversation_id: str, body: ConversationUpdate, request: Request) -> Conversation:
        if not await store.update_conversation(conversation_id, owner_of(request), body.metadata):
            raise not_found(conversation_id, "conversation")
        return await found(conversation_id, owner_of(request))

    @routes.delete("/v1/conversations/{conversation_id}", responses=errors(404, 503))
    async def delete(conversation_id: str, request: Request) -> ConversationDeleted:
        if not await store.delete_conversation(conversation_id, owner_of(request)):
            raise not_found(conversation_id, "conversation")
        return ConversationDeleted(id=conversation_id)

    @routes.post("/v1/conversations/{conversation_id}/items", responses=errors(400, 404, 503))
    async def add_items(conversation_id: str, body: ItemsCreate, request: Request) -> dict[str, Any]:  # fmt: skip
        items = [as_item(i) for i in body.items]
        if not await store.add_items(conversation_id, owner_of(request), items):
            raise not_found(conversation_id, "conversation")
        return listing(items, more=False)

    @routes.get("/v1/conversations/{conversation_id}/items", responses=errors(400, 404, 503))
    async def list_items(
        conversation_id: str, request: Request, after: str | None = None, limit: Limit = 20,
        order: Literal["asc", "desc"] = "desc",
    ) -> dict[str, Any]:  # fmt: skip
        """The conversation's items, newest first unless ``order=asc``, ``limit`` of them after the item ``after``."""
        await found(conversation_id, owner_of(request))
        if after is not None and await store.item(conversation_id, after) is None:
            raise APIError(400, f"after: no item {after!r} in this conversation", param="after", code="invalid_value")
        items, more = await store.items(conversation_id, after=after, limit=limit, descending=order == "desc")
        return listing(items, more=more)

    @routes.get("/v1/conversations/{conversation_id}/items/{item_id}", responses=errors(404, 503))
    async def get_item(conversation_id: str, item_id: str, request: Request) -> dict[str, Any]:  # fmt: skip
        await found(conversation_id, owner_of(request))
        item = await store.item(conversation_id, item_id)
        if item is None:
            raise APIError(404, f"no item {item_id!r} in this conversation", param="item_id", code="item_not_found")
        return item

    @routes.delete("/v1/conversations/{conversation_id}/items/{item_id}", responses=errors(404, 503))
    async def delete_item(conversation_id: str, item_id: str, request: Request) -> Conversation:
        conversation = await found(conversation_id, owner_of(request))
        if not await store.delete_item(conversation_id, item_id):
            raise APIError(404, f"no item {item_id!r} in this conversation", param="item_id", code="item_not_found")
        return conversation

    return routes
