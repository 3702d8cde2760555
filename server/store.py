"""Where stored responses, their stream events and conversations live: SQLite or PostgreSQL, one schema.

``research-serve --store sqlite:///PATH`` (the default: a file in the state directory) or
``--store postgresql://USER@HOST/DB`` (what several fronts share). SQLAlchemy Core writes the
same statements for both (``aiosqlite``, ``asyncpg``). The schema is versioned: the server
creates it and applies newer migrations at start (under an advisory lock on PostgreSQL, so
fronts starting together migrate once), and refuses a store newer than itself.

Every row belongs to an owner (the API key's name, :mod:`research.server.access`); every
read names it, so another key's object is absent, by the same query. A row past its
``expires_at`` (``--store-ttl``) is absent too, and purged by :meth:`Store.maintain`.
A background response is leased by the front running it (``lease_owner``, ``lease_until``);
:meth:`Store.maintain` renews a front's leases and fails the responses whose lease ran out.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from research.http_errors import APIError

ACTIVE = ("queued", "in_progress")
"""Statuses of a background response still running."""
RETRY_AFTER = "5"
"""Seconds a client is told to wait when the store is unreachable."""
DAY = 86400.0

metadata = sa.MetaData()
version_table = sa.Table("research_schema", metadata, sa.Column("version", sa.Integer, nullable=False))
responses = sa.Table(
    "research_responses",
    metadata,
    sa.Column("id", sa.String(80), primary_key=True),
    sa.Column("owner", sa.String(200), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("background", sa.Boolean, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False, index=True),
    sa.Column("context", sa.JSON, nullable=False),  # every input item the model was shown (history included)
    sa.Column("input_items", sa.JSON, nullable=False),  # the request's own input, as input_items lists it
    sa.Column("body", sa.JSON, nullable=False),  # the response object
    sa.Column("conversation_id", sa.String(80)),
    sa.Column("lease_owner", sa.String(80)),
    sa.Column("lease_until", sa.Float),
)
events = sa.Table(
    "research_response_events",
    metadata,
    sa.Column("response_id", sa.String(80), primary_key=True),
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("type", sa.String(80), nullable=False),
    sa.Column("data", sa.Text, nullable=False),
)
conversations = sa.Table(
    "research_conversations",
    metadata,
    sa.Column("id", sa.String(80), primary_key=True),
    sa.Column("owner", sa.String(200), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False, index=True),
    sa.Column("metadata", sa.JSON, nullable=False),
)
conversation_items = sa.Table(
    "research_conversation_items",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("conversation_id", sa.String(80), nullable=False, index=True),
    sa.Column("item_id", sa.String(80), nullable=False),
    sa.Column("item", sa.JSON, nullable=False),
    sa.UniqueConstraint("conversation_id", "item_id"),
)

Migration = Callable[[AsyncConnection], Awaitable[None]]


async def _v1(conn: AsyncConnection) -> None:
    await conn.run_sync(lambda sync: metadata.create_all(sync, tables=[responses, events, conversations,
                                                                       conversation_items]))  # fmt: skip


MIGRATIONS: list[Migration] = [_v1]
"""Migration ``i`` takes the schema from version ``i`` to ``i + 1``; append, never edit."""
SCHEMA_VERSION = len(MIGRATIONS)


class StoreUnavailable(APIError):
    """The store cannot be reached: 503 ``store_unavailable`` with ``Retry-After``."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(
            503, f"the response store is unavailable ({type(cause).__name__}); retry later, or send store: false "
            "without previous_response_id or conversation", code="store_unavailable",
            headers={"Retry-After": RETRY_AFTER},
        )  # fmt: skip


class StoreTooNew(ValueError):
    """The store's schema is newer than this server's."""


T = TypeVar("T")


def default_store_url() -> str:
    """``sqlite:///`` a file in the state directory (``$RESEARCH_STATE_DIR``, else ``~/.local/state/research``)."""
    state = Path(os.environ.get("RESEARCH_STATE_DIR") or Path.home() / ".local" / "state" / "research")
    return f"sqlite:///{state / 'research-serve.sqlite3'}"


def async_url(url: str) -> str:
    """``url`` with the asyncio driver: ``sqlite://`` → ``sqlite+aiosqlite://``, ``postgresql://`` → asyncpg.

    >>> async_url("postgresql://me@db/research")
    'postgresql+asyncpg://me@db/research'
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError(f"--store {url!r} is not a URL: use sqlite:///PATH or postgresql://USER@HOST/DB")
    drivers = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+asyncpg", "postgres": "postgresql+asyncpg"}
    if "+" in scheme:
        return url
    if scheme not in drivers:
        raise ValueError(f"--store {url!r}: the store is sqlite:///PATH or postgresql://USER@HOST/DB")
    return f"{drivers[scheme]}{sep}{rest}"


async def check_store(url: str) -> tuple[str, int]:
    """Open the store at ``url`` and make or migrate its schema: (where, version); a ValueError saying why not."""
    store = Store(url)
    try:
        return store.where, await store.migrate()
    except (OperationalError, InterfaceError, DBAPIError, OSError, TimeoutError) as exc:
        raise ValueError(f"--store {store.where}: cannot open it ({type(exc).__name__}: {exc})") from exc
    finally:
        await store.close()


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """Readers beside one writer (WAL), writers waiting their turn rather than failing at once."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def _dump(event: dict[str, Any]) -> str:
    return json.dumps(event, ensure_ascii=False, separators=(",", ":"))


def failed_event(body: dict[str, Any], seq: int) -> dict[str, Any]:
    """The ``response.failed`` event that ends a failed response's stream (``body``: the response as failed)."""
    return {"type": "response.failed", "sequence_number": seq, "response": body}


def _event_rows(id: str, first_seq: int, new_events: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {"response_id": id, "seq": first_seq + i, "type": e["type"], "data": _dump(e)} for i, e in enumerate(new_events)
    ]


async def _last_seq(conn: AsyncConnection, id: str) -> int:
    """The sequence number of response ``id``'s last stored event (-1 before the first)."""
    found = (await conn.execute(sa.select(sa.func.max(events.c.seq)).where(events.c.response_id == id))).scalar()
    return -1 if found is None else int(found)


def _owned(table: sa.Table, id: str, owner: str) -> sa.ColumnElement[bool]:
    """Row ``id`` of ``table`` if it is ``owner``'s and has not expired: how every client's read and write names it."""
    c = table.c
    return sa.and_(c.id == id, c.owner == owner, c.expires_at > time.time())


CHILDREN = {responses: events.c.response_id, conversations: conversation_items.c.conversation_id}
"""Each table of owned rows, and the column by which its child rows (stream events, items) name their parent."""


@dataclass(frozen=True, slots=True)
class StoredResponse:
    """A stored response's row."""

    id: str
    status: str
    background: bool
    body: dict[str, Any]
    context: list[dict[str, Any]]
    input_items: list[dict[str, Any]]
    conversation_id: str | None
    lease_owner: str | None

    @property
    def active(self) -> bool:
        return self.status in ACTIVE


class Store:
    """The tables above over one SQLAlchemy async engine; each method one short transaction.

    A driver or connection error is :class:`StoreUnavailable` (503), whatever the database.
    """

    def __init__(self, url: str | None = None, *, ttl: float = 30 * DAY, connect_timeout: float = 5.0) -> None:
        """``url`` None: a SQLite file in a temporary folder, removed at :meth:`close` (a server made in Python)."""
        self._scratch = None if url else tempfile.TemporaryDirectory(prefix="research-store-")
        self.url = url or f"sqlite:///{self._scratch.name}/store.sqlite3"  # type: ignore[union-attr]
        self.ttl = ttl
        full = async_url(self.url)
        if full.startswith("sqlite"):
            Path(full.partition(":///")[2]).parent.mkdir(parents=True, exist_ok=True)
        self.engine: AsyncEngine = create_async_engine(full, connect_args={"timeout": connect_timeout},
                                                       pool_pre_ping=True)  # fmt: skip
        self.postgres = self.engine.dialect.name == "postgresql"
        if not self.postgres:
            sa.event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
        self._ready: asyncio.Future[int] | None = None

    @property
    def where(self) -> str:
        """The store's URL without its password (for logs)."""
        return self.engine.url.render_as_string(hide_password=True)

    async def close(self) -> None:
        await self.engine.dispose()
        if self._scratch is not None:
            self._scratch.cleanup()

    # -- schema -------------------------------------------------------------------------------------
    async def migrate(self) -> int:
        """Create the schema or bring it to :data:`SCHEMA_VERSION`; the version it is at."""
        async with self.engine.begin() as conn:
            # servers starting together: one migrates, the others wait for it and find it done
            if self.postgres:
                await conn.execute(sa.text("SELECT pg_advisory_xact_lock(727271)"))
            else:  # the write lock now (the driver would only take it at the first write, after the check)
                await conn.exec_driver_sql("BEGIN IMMEDIATE")
            await conn.run_sync(lambda sync: version_table.create(sync, checkfirst=True))
            found = (await conn.execute(sa.select(version_table.c.version))).scalar()
            if found is None:
                await conn.execute(version_table.insert().values(version=0))
                found = 0
            if found > SCHEMA_VERSION:
                raise StoreTooNew(
                    f"the store {self.where} has schema version {found}, newer than this server's {SCHEMA_VERSION}: "
                    "upgrade research-serve"
                )
            for migration in MIGRATIONS[found:]:
                await migration(conn)
            await conn.execute(version_table.update().values(version=SCHEMA_VERSION))
        return SCHEMA_VERSION

    async def ready(self) -> int:
        """:meth:`migrate`, once for this store (again only if it failed); the schema's version."""
        if self._ready is None or (self._ready.done() and self._ready.exception() is not None):
            self._ready = asyncio.ensure_future(self.migrate())
        return await asyncio.shield(self._ready)

    async def _call(self, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """``work`` in one transaction, the schema made first; an unreachable database is a 503."""
        try:
            await self.ready()
            async with self.engine.begin() as conn:
                return await work(conn)
        except (OperationalError, InterfaceError, DBAPIError, OSError, TimeoutError) as exc:
            raise StoreUnavailable(exc) from exc

    # -- responses ----------------------------------------------------------------------------------
    async def add_response(
        self, owner: str, body: dict[str, Any], *, background: bool, context: list[dict[str, Any]],
        input_items: list[dict[str, Any]], conversation_id: str | None = None, lease_owner: str | None = None,
        lease_until: float | None = None,
    ) -> None:  # fmt: skip
        now = time.time()
        row = {
            "id": body["id"], "owner": owner, "status": body["status"], "background": background, "created_at": now,
            "expires_at": now + self.ttl, "context": context, "input_items": input_items, "body": body,
            "conversation_id": conversation_id, "lease_owner": lease_owner, "lease_until": lease_until,
        }  # fmt: skip

        async def work(conn: AsyncConnection) -> None:
            await conn.execute(responses.insert().values(**row))

        await self._call(work)

    async def response(self, id: str, owner: str) -> StoredResponse | None:
        """The response ``id`` of ``owner`` (None if absent, expired or another owner's)."""

        async def work(conn: AsyncConnection) -> Any:
            return (await conn.execute(sa.select(responses).where(_owned(responses, id, owner)))).mappings().first()

        row = await self._call(work)
        if row is None:
            return None
        return StoredResponse(
            row["id"], row["status"], row["background"], row["body"], row["context"], row["input_items"],
            row["conversation_id"], row["lease_owner"],
        )  # fmt: skip

    async def status(self, id: str, owner: str) -> str | None:
        """The status of ``owner``'s response ``id`` (None if absent): what a stream's follower polls."""

        async def work(conn: AsyncConnection) -> str | None:
            return (await conn.execute(sa.select(responses.c.status).where(_owned(responses, id, owner)))).scalar()

        return await self._call(work)

    async def update_response(
        self, id: str, body: dict[str, Any], new_events: Sequence[dict[str, Any]] = (), *, first_seq: int = 0
    ) -> bool:
        """Write a running response's object (and status) and its new stream events, numbered from ``first_seq``.

        Only while it is active: False (nothing written) once it was cancelled or failed by another.
        """
        r = responses.c

        async def work(conn: AsyncConnection) -> bool:
            query = responses.update().where(r.id == id, r.status.in_(ACTIVE)).values(status=body["status"], body=body)
            if (await conn.execute(query)).rowcount == 0:
                return False
            if new_events:
                await conn.execute(events.insert(), _event_rows(id, first_seq, new_events))
            return True

        return await self._call(work)

    async def finish_response(self, id: str, body: dict[str, Any]) -> None:
        """Write a response that is not background (or whose cancellation is done): its object, whatever it was."""
        r = responses.c

        async def work(conn: AsyncConnection) -> None:
            await conn.execute(responses.update().where(r.id == id).values(status=body["status"], body=body))

        await self._call(work)

    async def cancel_response(self, id: str, owner: str) -> bool:
        """Mark ``owner``'s active response ``id`` cancelled; False if it had ended (it stays as it ended)."""
        r = responses.c

        async def work(conn: AsyncConnection) -> bool:
            row = (await conn.execute(sa.select(r.body).where(r.id == id, r.owner == owner))).first()
            if row is None:
                return False
            body = {**row.body, "status": "cancelled"}
            query = responses.update().where(r.id == id, r.status.in_(ACTIVE)).values(status="cancelled", body=body)
            return (await conn.execute(query)).rowcount == 1

        return await self._call(work)

    async def delete_response(self, id: str, owner: str) -> bool:
        return await self._delete_owned(responses, id, owner)

    async def _delete_owned(self, table: sa.Table, id: str, owner: str) -> bool:
        """Delete ``owner``'s row ``id`` of ``table`` and its child rows; False if there was none."""
        key = CHILDREN[table]

        async def work(conn: AsyncConnection) -> bool:
            if (await conn.execute(table.delete().where(_owned(table, id, owner)))).rowcount == 0:
                return False
            await conn.execute(key.table.delete().where(key == id))
            return True

        return await self._call(work)

    async def events_after(self, id: str, after: int, limit: int = 500) -> list[tuple[int, str, str]]:
        """A background response's stream events after sequence number ``after``: (seq, type, JSON data)."""
        e = events.c

        async def work(conn: AsyncConnection) -> list[tuple[int, str, str]]:
            query = sa.select(e.seq, e.type, e.data).where(e.response_id == id, e.seq > after).order_by(e.seq)
            return [tuple(row) for row in (await conn.execute(query.limit(limit))).all()]

        return await self._call(work)

    async def last_event(self, id: str) -> int:
        """The sequence number of a response's last stored event (-1 before the first)."""
        return await self._call(lambda conn: _last_seq(conn, id))

    # -- leases and upkeep --------------------------------------------------------------------------
    async def maintain(self, front: str, until: float, failed: Callable[[dict[str, Any]], dict[str, Any]]) -> set[str]:
        """One round of upkeep: renew ``front``'s leases to ``until``; fail every other active response whose lease
        ran out (its object as ``failed`` makes it, and a ``response.failed`` event ending its stream); purge
        expired rows. Returns ``front``'s responses no longer active (cancelled elsewhere: stop them)."""
        r, now = responses.c, time.time()

        async def work(conn: AsyncConnection) -> set[str]:
            await conn.execute(
                responses.update().where(r.lease_owner == front, r.status.in_(ACTIVE)).values(lease_until=until)
            )
            dead = sa.select(r.id, r.body).where(r.status.in_(ACTIVE), r.lease_until < now, r.lease_owner != front)
            for row in (await conn.execute(dead.with_for_update() if self.postgres else dead)).all():
                body, seq = failed(row.body), await _last_seq(conn, row.id) + 1
                query = responses.update().where(r.id == row.id, r.status.in_(ACTIVE))
                if (await conn.execute(query.values(status="failed", body=body))).rowcount:
                    await conn.execute(events.insert(), _event_rows(row.id, seq, [failed_event(body, seq)]))
            for table, key in CHILDREN.items():
                expired = table.c.expires_at <= now
                await conn.execute(key.table.delete().where(key.in_(sa.select(table.c.id).where(expired))))
                await conn.execute(table.delete().where(expired))
            mine = sa.select(r.id).where(r.lease_owner == front, r.status.not_in(ACTIVE))
            return {row.id for row in (await conn.execute(mine)).all()}

        return await self._call(work)

    async def counts(self) -> dict[str, dict[str, int]]:
        """Stored objects: responses by status (``background`` and not) and conversations."""
        r = responses.c

        async def work(conn: AsyncConnection) -> dict[str, dict[str, int]]:
            now = time.time()
            by = sa.select(r.background, r.status, sa.func.count()).where(r.expires_at > now)
            rows = (await conn.execute(by.group_by(r.background, r.status))).all()
            out: dict[str, dict[str, int]] = {"responses": {}, "background": {}}
            for background, status, n in rows:
                out["responses"][status] = out["responses"].get(status, 0) + n
                if background:
                    out["background"][status] = n
            query = sa.select(sa.func.count()).select_from(conversations).where(conversations.c.expires_at > now)
            out["conversations"] = {"all": int((await conn.execute(query)).scalar() or 0)}
            return out

        return await self._call(work)

    # -- conversations ------------------------------------------------------------------------------
    async def add_conversation(
        self, id: str, owner: str, meta: dict[str, str], items: Iterable[dict[str, Any]]
    ) -> float:
        now = time.time()

        async def work(conn: AsyncConnection) -> None:
            await conn.execute(conversations.insert().values(id=id, owner=owner, created_at=now,
                                                             expires_at=now + self.ttl, metadata=meta))  # fmt: skip
            await self._add_items(conn, id, items)

        await self._call(work)
        return now

    async def conversation(self, id: str, owner: str) -> tuple[float, dict[str, str]] | None:
        """(created_at, metadata) of ``owner``'s conversation ``id``, or None."""
        c = conversations.c

        async def work(conn: AsyncConnection) -> Any:
            query = sa.select(c.created_at, c.metadata).where(_owned(conversations, id, owner))
            return (await conn.execute(query)).first()

        row = await self._call(work)
        return None if row is None else (row.created_at, row.metadata)

    async def update_conversation(self, id: str, owner: str, meta: dict[str, str]) -> bool:
        async def work(conn: AsyncConnection) -> bool:
            query = conversations.update().where(_owned(conversations, id, owner)).values(metadata=meta)
            return (await conn.execute(query)).rowcount == 1

        return await self._call(work)

    async def delete_conversation(self, id: str, owner: str) -> bool:
        return await self._delete_owned(conversations, id, owner)

    @staticmethod
    async def _add_items(conn: AsyncConnection, id: str, items: Iterable[dict[str, Any]]) -> None:
        rows = [{"conversation_id": id, "item_id": item["id"], "item": item} for item in items]
        if rows:
            await conn.execute(conversation_items.insert(), rows)

    async def add_items(self, id: str, owner: str, items: Sequence[dict[str, Any]]) -> bool:
        """Append ``items`` to ``owner``'s conversation ``id``; False if there is none."""

        async def work(conn: AsyncConnection) -> bool:
            found = await conn.execute(sa.select(conversations.c.id).where(_owned(conversations, id, owner)))
            if found.first() is None:
                return False
            await self._add_items(conn, id, items)
            return True

        return await self._call(work)

    async def items(self, id: str, *, after: str | None = None, limit: int | None = None,
                    descending: bool = False) -> tuple[list[dict[str, Any]], bool]:  # fmt: skip
        """A conversation's items in order (or newest first), after the item ``after``: (items, has_more).

        The caller has checked that the conversation is its owner's (:meth:`conversation`).
        """
        i = conversation_items.c

        async def work(conn: AsyncConnection) -> tuple[list[dict[str, Any]], bool]:
            query = sa.select(i.item).where(i.conversation_id == id)
            if after is not None:
                mark = sa.select(i.seq).where(i.conversation_id == id, i.item_id == after).scalar_subquery()
                query = query.where(i.seq < mark if descending else i.seq > mark)
            query = query.order_by(i.seq.desc() if descending else i.seq)
            if limit is not None:
                query = query.limit(limit + 1)
            rows = [row.item for row in (await conn.execute(query)).all()]
            more = limit is not None and len(rows) > limit
            return rows[:limit] if more else rows, more

        return await self._call(work)

    async def item(self, id: str, item_id: str) -> dict[str, Any] | None:
        i = conversation_items.c

        async def work(conn: AsyncConnection) -> Any:
            query = sa.select(i.item).where(i.conversation_id == id, i.item_id == item_id)
            return (await conn.execute(query)).scalar()

        return await self._call(work)

    async def delete_item(self, id: str, item_id: str) -> bool:
        i = conversation_items.c

        async def work(conn: AsyncConnection) -> bool:
            query = conversation_items.delete().where(i.conversation_id == id, i.item_id == item_id)
            return (await conn.execute(query)).rowcount == 1

        return await self._call(work)
