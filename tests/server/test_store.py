"""The response store itself, on SQLite and on a real PostgreSQL server: its schema's version, expiry, owners."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
import sqlalchemy as sa

from research.server.store import SCHEMA_VERSION, Store, StoreTooNew, check_store, version_table

KINDS = ("sqlite", "postgresql")


@pytest.fixture(params=KINDS)
def url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.sqlite3'}"
    return request.getfixturevalue("postgres").url


def response(status: str = "completed") -> dict:
    return {"id": f"resp_{uuid.uuid4().hex}", "status": status, "output": []}


async def test_the_schema_is_made_once_and_a_newer_one_is_refused(url):
    assert await check_store(url) == (Store(url).where, SCHEMA_VERSION)
    assert (await check_store(url))[1] == SCHEMA_VERSION  # again: nothing to do
    store = Store(url)
    async with store.engine.begin() as conn:
        await conn.execute(version_table.update().values(version=SCHEMA_VERSION + 1))
    with pytest.raises(StoreTooNew, match=f"schema version {SCHEMA_VERSION + 1}, newer than this server's"):
        await store.migrate()
    async with store.engine.begin() as conn:
        await conn.execute(version_table.update().values(version=SCHEMA_VERSION))
    await store.close()


async def test_fronts_starting_together_migrate_once(url):
    stores = [Store(url) for _ in range(4)]
    assert await asyncio.gather(*(s.migrate() for s in stores)) == [SCHEMA_VERSION] * 4
    async with stores[0].engine.connect() as conn:
        assert (await conn.execute(sa.select(sa.func.count()).select_from(version_table))).scalar() == 1
    for store in stores:
        await store.close()


async def test_an_expired_response_is_absent_and_purged(url):
    store = Store(url, ttl=0.3)
    body = response()
    await store.add_response("me", body, background=False, context=[], input_items=[])
    assert (await store.response(body["id"], "me")) is not None
    assert await store.response(body["id"], "someone else") is None
    await asyncio.sleep(0.4)
    assert await store.response(body["id"], "me") is None
    await store.maintain("front", time.time() + 1, lambda b: b)
    async with store.engine.connect() as conn:
        query = sa.text("SELECT count(*) FROM research_responses WHERE id = :id")
        assert (await conn.execute(query, {"id": body["id"]})).scalar() == 0
    await store.close()


async def test_a_finished_response_cannot_be_cancelled_or_overwritten_by_a_late_write(url):
    store = Store(url)
    body = response("in_progress")
    await store.add_response("me", body, background=True, context=[], input_items=[], lease_owner="a",
                             lease_until=time.time() + 30)  # fmt: skip
    assert await store.cancel_response(body["id"], "me")
    late = {**body, "status": "completed"}
    assert not await store.update_response(body["id"], late, [{"type": "response.completed", "sequence_number": 0}])
    assert (await store.response(body["id"], "me")).status == "cancelled"
    assert await store.events_after(body["id"], -1) == []
    assert not await store.cancel_response(body["id"], "me")  # ended: stays as it ended
    await store.close()


async def test_a_response_failed_by_its_lease_before_any_event_streams_from_sequence_number_0(url):
    store = Store(url)
    body = response("in_progress")
    await store.add_response("me", body, background=True, context=[], input_items=[], lease_owner="dead",
                             lease_until=time.time() - 1)  # fmt: skip
    await store.maintain("alive", time.time() + 30, lambda b: {**b, "status": "failed"})
    assert await store.status(body["id"], "me") == "failed"
    [(seq, kind, _)] = await store.events_after(body["id"], -1)
    assert (seq, kind) == (0, "response.failed") and await store.last_event(body["id"]) == 0
    await store.close()
