"""``postgresql://…``: the shared store, psycopg 3 and psycopg-pool (sync API).

psycopg's async API runs on asyncio only, so the sync one is driven from
trio worker threads. Each call takes a pooled connection (checked on the
way out of the pool, so connections broken by a server restart are
replaced, not handed out), runs one transaction and gives it back. A trio
cancellation (or the store's time limit) trips the call's guard: psycopg's
``cancel_safe`` stops the statement running and no further statement runs,
the transaction rolls back, and the connection goes back to the pool idle.
A connection the pool gets back mid-query is closed by the pool, never
reused.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import psycopg
import psycopg.errors
import trio
from psycopg_pool import ConnectionPool

from server.protocol import ConfigurationError, StoreUnavailableError

from ._records import now_ms
from ._schema import CREATE_VERSION_TABLE, LATEST_VERSION, pending_migrations
from ._sql import Db, Row
from ._sqlbase import SqlStore
from ._threads import CallGuard, run_interruptible

T = TypeVar("T")

#: First key of the advisory lock that serialises migrations (the second is the schema).
_MIGRATION_LOCK = 0x43484154  # "CHAT"


@functools.lru_cache(maxsize=256)
def _pg(sql: str) -> str:
    """``?`` placeholders to psycopg's ``%s`` (our SQL has no other ``?`` or ``%``)."""
    return sql.replace("?", "%s")


class _PgDb:
    """A connection in a transaction, checking for cancellation before each statement."""

    for_update = " FOR UPDATE"
    for_share = " FOR SHARE"
    skip_locked = " FOR UPDATE SKIP LOCKED"
    greatest = "GREATEST"

    def __init__(self, conn: psycopg.Connection[Row], guard: CallGuard) -> None:
        self._conn = conn
        self._guard = guard

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        self._guard.check()
        return self._conn.execute(_pg(sql), params).fetchall()

    def one(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        self._guard.check()
        return self._conn.execute(_pg(sql), params).fetchone()

    def run(self, sql: str, params: Sequence[Any] = ()) -> int:
        self._guard.check()
        return self._conn.execute(_pg(sql), params).rowcount

    def packed_rows(self, columns: str, query: str, params: Sequence[Any] = ()) -> list[Row]:
        return self.rows(query, params)  # one round trip brings every row anyway

    def is_unique_violation(self, error: Exception) -> bool:
        return isinstance(error, psycopg.errors.UniqueViolation)


class PostgresStore(SqlStore):
    kind = "postgresql"

    def __init__(
        self,
        conninfo: str,
        *,
        min_size: int = 1,
        max_size: int = 8,
        grace: float = 2.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._grace = grace
        self._limiter = trio.CapacityLimiter(max_size)
        self._pool: ConnectionPool[psycopg.Connection[Row]] = ConnectionPool(
            conninfo,
            min_size=min_size,
            max_size=max_size,
            open=False,
            timeout=self.timeout,
            check=ConnectionPool.check_connection,
            kwargs={"autocommit": True, "connect_timeout": max(1, round(self.timeout))},
            name="chat-store",
        )
        self._closed = False

    def _call(self, fn: Callable[[Db], T], guard: CallGuard) -> T:
        try:
            with self._pool.connection() as conn:
                guard.attach(functools.partial(conn.cancel_safe, timeout=self._grace))
                try:
                    with conn.transaction():
                        result = fn(_PgDb(conn, guard))
                        guard.check()
                    return result
                finally:
                    guard.attach(None)
        except psycopg.Error as error:
            raise StoreUnavailableError(f"postgresql: {error}") from error

    async def _run(self, fn: Callable[[Db], T]) -> T:
        if self._closed:
            raise StoreUnavailableError("the store is closed")
        return await run_interruptible(
            functools.partial(self._call, fn), grace=self._grace, limiter=self._limiter
        )

    async def _write(self, name: str, fn: Callable[[Db], T]) -> T:
        return await self._run(fn)

    async def _read(self, name: str, fn: Callable[[Db], T]) -> T:
        return await self._run(fn)

    # -- lifetime -----------------------------------------------------------------

    async def open(self, *, target_version: int = LATEST_VERSION) -> None:
        """Open the pool (its first connection) and apply the migrations."""

        def start() -> None:
            try:
                self._pool.open(wait=True, timeout=self.timeout)
            except psycopg.Error as error:
                raise StoreUnavailableError(f"postgresql: {error}") from error

        try:
            with trio.fail_after(self.timeout + self._grace):
                await trio.to_thread.run_sync(start, abandon_on_cancel=True)
        except trio.TooSlowError:
            await self.aclose()
            raise StoreUnavailableError("postgresql: could not connect") from None
        except BaseException:
            await self.aclose()
            raise
        try:
            await self._op("migrate", lambda: self._run(lambda db: _migrate(db, target_version)))
        except BaseException:
            await self.aclose()
            raise

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(functools.partial(self._pool.close, timeout=self._grace))


def _migrate(db: Db, target: int) -> None:
    # Two processes starting at once: the second waits here for the first to commit.
    db.one("SELECT pg_advisory_xact_lock(?, hashtext(current_schema()))", (_MIGRATION_LOCK,))
    db.run(CREATE_VERSION_TABLE)
    row = db.one("SELECT COALESCE(MAX(version), 0) FROM schema_version")
    current = 0 if row is None else row[0]
    if current > LATEST_VERSION:
        raise ConfigurationError(
            f"the database's schema version {current} is newer than this server's"
            f" ({LATEST_VERSION}): upgrade the server"
        )
    for migration in pending_migrations(current, target):
        for statement in migration.statements["postgresql"]:
            db.run(statement)
        db.run(
            "INSERT INTO schema_version (version, description, applied_at) VALUES (?, ?, ?)",
            (migration.version, migration.description, now_ms()),
        )
