"""The stored responses' routes: ``GET``/``DELETE /v1/responses/{id}`` (``stream=true`` with ``starting_after`` for
a background one), ``POST /v1/responses/{id}/cancel`` and ``GET /v1/responses/{id}/input_items``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from research.http_errors import APIError, StrictJSONResponse, errors
from research.server.access import owner_of
from research.server.middleware import TimedStream
from research.server.records import Limit, ResponseRecords, not_found, page
from research.server.response_items import ResponseObject
from research.server.routing import SSE_EVENT, sse
from research.server.store import ACTIVE

StartingAfter = Annotated[int | None, Query(description="with stream: the events after this sequence number")]


def router(records: ResponseRecords) -> APIRouter:
    """The stored responses' routes."""
    routes = APIRouter(tags=["responses"])
    store, background = records.store, records.background
    found = {200: {"model": ResponseObject, "content": {"text/event-stream": {"schema": SSE_EVENT}}}}

    @routes.get("/v1/responses/{response_id}", responses={**found, **errors(400, 404, 503)})
    async def retrieve(
        response_id: str, request: Request, stream: bool = False,
        starting_after: StartingAfter = None,
    ) -> Response:  # fmt: skip
        """The stored response; with ``stream=true`` (a background one), its events again, after ``starting_after``."""
        owner = owner_of(request)
        row = await records.find(response_id, owner)
        if not stream:
            return StrictJSONResponse(row.body)
        if not row.background:
            raise APIError(400, "only a background response can be streamed again", param="stream",
                           code="invalid_value")  # fmt: skip
        after = -1 if starting_after is None else starting_after
        last = await store.last_event(response_id)
        if after < -1 or after > last:
            raise APIError(
                400, f"starting_after is {starting_after}; this response's events are numbered 0 to {last}",
                param="starting_after", code="invalid_value",
            )  # fmt: skip
        return follow(records, response_id, owner, after)

    @routes.delete("/v1/responses/{response_id}", responses=errors(404, 503))
    async def delete(response_id: str, request: Request) -> dict[str, Any]:
        owner = owner_of(request)
        row = await records.find(response_id, owner)
        if row.active:
            await store.cancel_response(response_id, owner)
            await background.cancel(response_id)
        if not await store.delete_response(response_id, owner):
            raise not_found(response_id)
        return {"id": response_id, "object": "response.deleted", "deleted": True}

    @routes.post("/v1/responses/{response_id}/cancel", responses={200: {"model": ResponseObject},
                                                                  **errors(400, 404, 503)})  # fmt: skip
    async def cancel(response_id: str, request: Request) -> Response:
        """Stop a background response (``cancelled``, its output so far); one that has ended stays as it ended."""
        owner = owner_of(request)
        row = await records.find(response_id, owner)
        if not row.background:
            raise APIError(400, "only a background response can be cancelled", param="response_id",
                           code="invalid_value")  # fmt: skip
        if await store.cancel_response(response_id, owner):
            await background.cancel(response_id)  # here, or its front stops it at its next write
        return StrictJSONResponse((await records.find(response_id, owner)).body)

    @routes.get("/v1/responses/{response_id}/input_items", responses=errors(400, 404, 503))
    async def input_items(
        response_id: str, request: Request, after: str | None = None, limit: Limit = 20,
        order: Literal["asc", "desc"] = "desc",
    ) -> dict[str, Any]:  # fmt: skip
        """The request's own input items (not the turns it continued), newest first unless ``order=asc``."""
        row = await records.find(response_id, owner_of(request))
        return page(row.input_items, after, limit, order)

    return routes


def follow(records: ResponseRecords, id: str, owner: str, after: int) -> TimedStream:
    """A stored background response's stream, from the event after ``after`` to its end."""

    async def active() -> bool:
        return await records.store.status(id, owner) in ACTIVE

    async def body() -> AsyncIterator[bytes]:
        async for kind, data in records.background.follow(id, after, active):
            yield sse(data, kind)

    return TimedStream(body(), write_timeout=records.write_timeout, headers={"x-request-id": id})
