"""``sqlite:///PATH``: the embedded store, stdlib ``sqlite3`` in WAL mode.

Writes go through one writer connection owned by one thread, which commits
everything queued in one transaction (``_sqlite_writes.WriteCombiner``:
group commit for every write). Reads use a few reader connections, which
WAL lets read while the writer writes, each call in a worker thread that a
cancellation interrupts (``_threads.run_interruptible``). The event loop
never waits for the disk.

``synchronous=FULL`` by default: in WAL mode that syncs the log at every
commit, so a run whose final event was sent survives a power loss, not
only a crash of the process (``NORMAL`` would survive the latter only). The
cost is one sync per commit, which group commit shares among every write
queued meanwhile. ``?synchronous=normal`` in the URL trades it away.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import orjson
import trio

from server.protocol import ConfigurationError, StoreUnavailableError

from ._records import now_ms
from ._schema import CREATE_VERSION_TABLE, LATEST_VERSION, pending_migrations
from ._sql import Db, Row
from ._sqlbase import SqlStore
from ._sqlite_writes import WriteCombiner
from ._threads import CallGuard, run_interruptible

T = TypeVar("T")

SYNCHRONOUS_MODES = ("FULL", "NORMAL", "EXTRA")


class _SqliteDb:
    """A connection in a transaction, checking for cancellation before each statement."""

    for_update = ""
    for_share = ""
    skip_locked = ""
    greatest = "MAX"

    def __init__(self, conn: sqlite3.Connection, guard: CallGuard) -> None:
        self._conn = conn
        self._guard = guard
        #: Set by the writer thread for each write of a batch: a savepoint is
        #: opened before that write's first change (so an answer such as
        #: THREAD_BUSY, which comes before any change, costs no statement).
        self.savepoint_due = False
        self.savepoint_open = False

    def _before_change(self) -> None:
        self._guard.check()
        if self.savepoint_due:
            self.savepoint_due = False
            self._conn.execute("SAVEPOINT w")
            self.savepoint_open = True

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        self._guard.check()
        return self._conn.execute(sql, params).fetchall()

    def one(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        self._guard.check()
        row: Row | None = self._conn.execute(sql, params).fetchone()
        return row

    def run(self, sql: str, params: Sequence[Any] = ()) -> int:
        self._before_change()
        return self._conn.execute(sql, params).rowcount

    def packed_rows(self, columns: str, query: str, params: Sequence[Any] = ()) -> list[Row]:
        # One row of JSON instead of one step per row: every step of a worker
        # thread gives the GIL up, and a busy event loop may keep it for a while.
        self._guard.check()
        row = self._conn.execute(
            f"SELECT json_group_array(json_array({columns})) FROM ({query})", params
        ).fetchone()
        return [tuple(r) for r in orjson.loads(row[0])] if row and row[0] else []

    def is_unique_violation(self, error: Exception) -> bool:
        return isinstance(error, sqlite3.IntegrityError)


#: SQLite's primary result code for a write to a read-only database.
_SQLITE_READONLY = 8
#: Primary result codes of a lock another connection holds.
_SQLITE_BUSY, _SQLITE_LOCKED = 5, 6


class SqliteStore(SqlStore):
    kind = "sqlite"

    def __init__(
        self,
        path: str | Path,
        *,
        synchronous: str = "FULL",
        readers: int = 4,
        grace: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        synchronous = synchronous.upper()
        if synchronous not in SYNCHRONOUS_MODES:
            raise ConfigurationError(f"sqlite synchronous must be one of {SYNCHRONOUS_MODES}")
        self.path = Path(path)
        self.synchronous = synchronous
        self._grace = grace
        self._writes: WriteCombiner | None = None
        self._idle_readers: list[sqlite3.Connection] = []
        self._reader_limiter = trio.CapacityLimiter(readers)
        self._closed = False

    # -- connections --------------------------------------------------------------

    def _connect(self, *, reader: bool) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path,
            isolation_level=None,
            check_same_thread=False,
            timeout=self.timeout,
        )
        try:
            _use_wal(conn, self.timeout)
            conn.execute(f"PRAGMA synchronous={self.synchronous}")
            # Page cache (KiB): the writer keeps the hot part of the events
            # index in memory; readers need less.
            conn.execute(f"PRAGMA cache_size={-8192 if reader else -32768}")
            if reader:
                conn.execute("PRAGMA query_only=1")
        except BaseException:
            conn.close()
            raise
        return conn

    def _read_transaction(
        self, conn: sqlite3.Connection, guard: CallGuard, fn: Callable[[Db], T]
    ) -> T:
        try:
            guard.check()
            conn.execute("BEGIN")
            result = fn(_SqliteDb(conn, guard))
            guard.check()
            conn.execute("COMMIT")
            return result
        except BaseException as error:
            try:
                self._rollback(conn)
            except sqlite3.Error as failed:
                raise StoreUnavailableError(f"sqlite: {failed}") from error
            if isinstance(error, sqlite3.Error):
                raise StoreUnavailableError(f"sqlite: {error}") from error
            raise

    def _rollback(self, conn: sqlite3.Connection) -> None:
        """Leave no transaction open (a reader that cannot roll back is closed)."""
        try:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        except sqlite3.Error:
            conn.close()
            raise

    async def _write(self, name: str, fn: Callable[[Db], T]) -> T:
        self._check_open()
        if self._writes is None:
            raise StoreUnavailableError("the store is not open")
        return await self._writes.write(fn)

    async def _read(self, name: str, fn: Callable[[Db], T]) -> T:
        async with self._reader_limiter:
            self._check_open()
            held: list[sqlite3.Connection] = self._idle_readers[-1:]
            del self._idle_readers[-1:]
            abandoned = False

            def work(guard: CallGuard) -> T:
                if not held:
                    held.append(_opened(lambda: self._connect(reader=True)))
                conn = held[0]
                guard.attach(conn.interrupt)
                try:
                    return self._read_transaction(conn, guard, fn)
                except StoreUnavailableError:
                    # A reader that failed is not trusted again: the next
                    # call opens a fresh one.
                    held.clear()
                    conn.close()
                    raise
                finally:
                    guard.attach(None)

            def abandon() -> None:
                nonlocal abandoned
                abandoned = True

            def late_return() -> None:
                if held:
                    held[0].close()

            try:
                return await run_interruptible(
                    work, grace=self._grace, on_abandon=abandon, on_late_return=late_return
                )
            finally:
                if held and not abandoned:
                    if self._closed:
                        held[0].close()
                    else:
                        self._idle_readers.append(held[0])

    def _check_open(self) -> None:
        if self._closed:
            raise StoreUnavailableError("the store is closed")

    # -- lifetime -----------------------------------------------------------------

    async def open(self, *, target_version: int = LATEST_VERSION) -> None:
        """Create the file's directory and apply the migrations up to ``target_version``."""

        def work(guard: CallGuard) -> None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise StoreUnavailableError(f"sqlite: {error}") from error
            conn = _opened(lambda: self._connect(reader=False))
            try:
                guard.attach(conn.interrupt)
                _migrate(conn, target_version)
            except sqlite3.Error as error:
                raise StoreUnavailableError(f"sqlite: {error}") from error
            finally:
                guard.attach(None)
                conn.close()

        await self._op("migrate", lambda: run_interruptible(work, grace=self._grace))
        self._writes = WriteCombiner(
            connect=lambda: self._connect(reader=False),
            make_db=_SqliteDb,
            timeout=self.timeout,
            grace=self._grace,
        )
        self._writes.start()

    async def _check_writes(self) -> None:
        try:
            await super()._check_writes()
        except StoreUnavailableError as error:
            # Retried every few seconds while writes fail. A connection that
            # found its file read-only keeps saying so after the file is
            # writable again: each retry then gets a fresh one.
            cause = error.__cause__
            read_only = (
                isinstance(cause, sqlite3.Error)
                and cause.sqlite_errorcode & 0xFF == _SQLITE_READONLY
            )
            if read_only and self._writes is not None:
                self._writes.renew_connection()
            raise

    @property
    def writer_connection(self) -> sqlite3.Connection | None:
        """The writer thread's connection (tests use it to change pragmas)."""
        return None if self._writes is None else self._writes.connection()

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        with trio.CancelScope(shield=True):
            if self._writes is not None:
                await self._writes.aclose()
            conns = list(self._idle_readers)
            self._idle_readers.clear()
            await trio.to_thread.run_sync(_close_all, conns)


def _use_wal(conn: sqlite3.Connection, timeout: float) -> None:
    """Put the database in WAL mode (kept in the file), waiting out other openers.

    Switching a new file to WAL needs an exclusive lock, and SQLite answers
    "database is locked" at once, without its busy handler, to a connection
    that asks while another one switches: several workers starting on one new
    file did. Retried until ``timeout``, like any other lock.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as error:
            locked = error.sqlite_errorcode & 0xFF in (_SQLITE_BUSY, _SQLITE_LOCKED)
            if not locked or time.monotonic() >= deadline:
                raise
        time.sleep(0.01)  # in a worker thread, never on the event loop


def _opened(connect: Callable[[], sqlite3.Connection]) -> sqlite3.Connection:
    try:
        return connect()
    except sqlite3.Error as error:
        raise StoreUnavailableError(f"sqlite: {error}") from error


def _close_all(conns: list[sqlite3.Connection]) -> None:
    for conn in conns:
        conn.close()


def _migrate(conn: sqlite3.Connection, target: int) -> None:
    """Apply the missing migrations in one ``BEGIN IMMEDIATE`` transaction."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(CREATE_VERSION_TABLE)
        current = conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()[0]
        if current > LATEST_VERSION:
            raise ConfigurationError(
                f"the database's schema version {current} is newer than this server's"
                f" ({LATEST_VERSION}): upgrade the server"
            )
        for migration in pending_migrations(current, target):
            for statement in migration.statements["sqlite"]:
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_version (version, description, applied_at) VALUES (?, ?, ?)",
                (migration.version, migration.description, now_ms()),
            )
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
