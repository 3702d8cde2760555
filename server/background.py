"""Responses that outlive their request: each runs as a task of this front, its stream events and object written to
the store as they come, so any front can poll it, stream it from any event on, or cancel it.

A front holds a lease on every active response it runs (:meth:`Store.maintain` renews it
every third of ``lease`` seconds). A front that dies stops renewing; the next upkeep of any
front (a restarted one included) marks the response ``failed`` with a ``response.failed``
event, within ``lease`` seconds plus one round. It is not resumed elsewhere: its stream's
events so far were sampled by the dead front, and a new run would write different ones
under the same sequence numbers a client may have read.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing, suppress
from typing import Any

from research.http_errors import APIError
from research.server.response_items import ResponseObject, StreamEvent
from research.server.store import Store, failed_event

log = logging.getLogger("research.server")

FLUSH_SECONDS = 0.1
"""A running response's new events are written at most this often (and at its end)."""
POLL_SECONDS = 0.25
"""How often a stream of a response another front runs looks for new events."""
TERMINAL = frozenset({"response.completed", "response.incomplete", "response.failed"})

Finish = Callable[[ResponseObject], Awaitable[None]]


def failed(body: dict[str, Any], message: str, code: str = "server_error") -> dict[str, Any]:
    """``body`` (a response object) as failed with ``message``."""
    return {**body, "status": "failed", "error": {"code": code, "message": message}}


def lease_ran_out(body: dict[str, Any]) -> dict[str, Any]:
    return failed(body, "the server running this response stopped before it finished; create it again")


class Background:
    """This front's running responses (their tasks), its leases, and streams of stored events."""

    def __init__(self, store: Store, *, lease: float = 30.0, limit: int = 64) -> None:
        self.store, self.lease, self.limit = store, lease, limit
        self.front = f"front-{uuid.uuid4().hex[:16]}"
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.cancelling: set[str] = set()
        self._signals: dict[str, asyncio.Event] = {}
        self._upkeep: asyncio.Task[None] | None = None

    def lease_until(self) -> float:
        return time.time() + self.lease

    # -- upkeep ---------------------------------------------------------------------------------------
    def start_upkeep(self) -> None:
        """Renew this front's leases and fail dead fronts' responses, every third of the lease, from now on."""
        if self._upkeep is None or self._upkeep.done():
            self._upkeep = asyncio.ensure_future(self._maintain())

    async def _maintain(self) -> None:
        while True:
            try:
                ended = await self.store.maintain(self.front, self.lease_until(), lease_ran_out)
                for id in ended:  # cancelled through another front
                    self._stop(id)
            except APIError as exc:  # the store is down: leases lapse only if it stays down past the lease
                log.warning("store upkeep failed: %s", exc.message)
            except Exception:
                log.exception("store upkeep failed")
            await asyncio.sleep(self.lease / 3)

    async def close(self) -> None:
        """Stop every running response (each stored as failed: the server shut down) and the upkeep."""
        for task in list(self.tasks.values()):
            task.cancel()
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)
        if self._upkeep is not None:
            self._upkeep.cancel()
            await asyncio.gather(self._upkeep, return_exceptions=True)

    # -- running ------------------------------------------------------------------------------------
    def check_room(self) -> None:
        """A 429 when this front runs ``limit`` background responses already."""
        if len(self.tasks) >= self.limit:
            raise APIError(
                429, f"this server runs {self.limit} background responses already; retry", code="too_many_requests",
                headers={"Retry-After": "1"},
            )  # fmt: skip

    def run(self, response: ResponseObject, events: AsyncIterator[StreamEvent], finish: Finish) -> None:
        """Run ``events`` (a response's stream, growing ``response``) to its end as a task; ``finish`` after."""
        self.start_upkeep()
        self.tasks[response.id] = asyncio.ensure_future(self._run(response, events, finish))
        self.tasks[response.id].add_done_callback(lambda _: self.tasks.pop(response.id, None))

    async def _run(self, response: ResponseObject, events: AsyncIterator[StreamEvent], finish: Finish) -> None:
        id, pending, seq, flushed = response.id, [], 0, time.monotonic()

        async def flush(last: bool = False) -> bool:
            """Write the new events; the object ends (its status) only with the last event, never before it."""
            nonlocal seq, pending, flushed
            body = response.model_dump(mode="json")
            if not last:
                body["status"] = "in_progress"
            written = await self.store.update_response(id, body, pending, first_seq=seq)
            seq, pending, flushed = seq + len(pending), [], time.monotonic()
            self._wake(id)
            return written

        try:
            async with aclosing(events):
                async for event in events:
                    pending.append(event.model_dump(mode="json"))
                    last = event.type in TERMINAL
                    if (last or time.monotonic() - flushed >= FLUSH_SECONDS) and not await flush(last):
                        return  # cancelled or failed elsewhere: the engine request is aborted as we leave
            await finish(response)
        except asyncio.CancelledError:
            if id in self.cancelling:  # POST .../cancel: the output so far, as cancelled
                response.status = "cancelled"
                await self.store.finish_response(id, response.model_dump(mode="json"))
            else:
                await self._fail(response, pending, seq, "the server shut down while this response ran")
        except Exception as exc:
            log.error("a background response failed", exc_info=exc, extra={"request_id": id})
            message = exc.message if isinstance(exc, APIError) else f"the search loop failed (request {id})"
            await self._fail(response, pending, seq, message)
        finally:
            self.cancelling.discard(id)
            self._wake(id)

    async def _fail(self, response: ResponseObject, pending: list[dict[str, Any]], seq: int, message: str) -> None:
        body = failed(response.model_dump(mode="json"), message)
        pending.append(failed_event(body, seq + len(pending)))
        with suppress(APIError):  # the store is down: the lease runs out and another front marks it failed
            await self.store.update_response(response.id, body, pending, first_seq=seq)

    def _stop(self, id: str) -> asyncio.Task[None] | None:
        """Cancel this front's task running ``id`` (the store says ``cancelled`` already), if it runs here."""
        task = self.tasks.get(id)
        if task is not None:
            self.cancelling.add(id)
            task.cancel()
        return task

    async def cancel(self, id: str) -> None:
        """Stop this front's task running ``id`` (the store says ``cancelled`` already) and wait for it."""
        if (task := self._stop(id)) is not None:
            await asyncio.gather(task, return_exceptions=True)

    # -- following --------------------------------------------------------------------------------
    def _wake(self, id: str) -> None:
        if (signal := self._signals.pop(id, None)) is not None:
            signal.set()

    async def follow(
        self, id: str, after: int, active: Callable[[], Awaitable[bool]]
    ) -> AsyncIterator[tuple[str, str]]:
        """The stored stream events of ``id`` after sequence number ``after`` (type, JSON), until it has ended
        (``active`` says whether it runs still); events come as they are written, from whichever front runs it."""
        while True:
            signal = self._signals.setdefault(id, asyncio.Event())
            batch = await self.store.events_after(id, after)
            for _seq, kind, data in batch:
                yield kind, data
            if batch:
                after = batch[-1][0]
                continue
            if not await active():  # its status and its last events are written together: read them once more
                for _seq, kind, data in await self.store.events_after(id, after):
                    yield kind, data
                return
            with suppress(TimeoutError):
                await asyncio.wait_for(signal.wait(), POLL_SECONDS)
