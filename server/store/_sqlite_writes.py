"""SQLite's one writer: a thread that commits every queued write in one transaction.

SQLite takes one writer at a time, and with ``synchronous=FULL`` every
commit costs a sync of the log. So writes are not run one transaction each:
callers queue them, and the writer thread takes *everything* queued and runs
it in one ``BEGIN IMMEDIATE … COMMIT``, each write's changes after a savepoint
of its own (a write that answers THREAD_BUSY or THREAD_NOT_FOUND is rolled
back alone).
Under load, one sync covers many ``begin_run``\\ s and the HistoryWriter's
batch of events and ends: group commit for every write, not only events.

Deadlines: a batch may run for ``timeout`` seconds; past that SQLite's
progress handler interrupts it and the whole batch fails (rolled back) with
``StoreUnavailableError``. A caller cancelled while its write is still queued
takes it out of the queue; once the write is in the batch being committed,
the caller waits (shielded, bounded) for the outcome, so a ``begin_run`` is
never committed behind the back of a caller that was told it failed.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import attrs
import outcome
import trio

from server.protocol import ProtocolError, StoreUnavailableError

from ._sql import Db
from ._threads import CallGuard

T = TypeVar("T")

logger = logging.getLogger(__name__)

_QUEUED, _TAKEN, _CANCELLED = "queued", "taken", "cancelled"
#: SQLite VM instructions between two deadline checks (a few microseconds).
_PROGRESS_STEPS = 10_000


class SavepointDb(Db, Protocol):
    """A Db that opens a savepoint before a write's first change when one is due."""

    savepoint_due: bool
    savepoint_open: bool


@attrs.define(eq=False)
class _Write:
    fn: Callable[[Db], Any]
    token: trio.lowlevel.TrioToken
    done: trio.Event = attrs.field(factory=trio.Event)
    state: str = _QUEUED
    result: outcome.Outcome[Any] | None = None


class WriteCombiner:
    """The writer thread and its queue; see the module doc.

    ``connect`` opens the writer connection (again, after a connection that
    could not roll back was dropped); ``make_db`` wraps it for ``_sql``.
    """

    def __init__(
        self,
        *,
        connect: Callable[[], sqlite3.Connection],
        make_db: Callable[[sqlite3.Connection, CallGuard], SavepointDb],
        timeout: float,
        grace: float,
    ) -> None:
        self._connect = connect
        self._make_db = make_db
        self._timeout = timeout
        self._grace = grace
        self._queue: queue.SimpleQueue[_Write | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._thread = threading.Thread(
            target=self._serve, name="chat-store-sqlite-writer", daemon=True
        )
        self._guard = CallGuard()  # never tripped: deadlines come from the progress handler
        self.batches = 0
        #: Set from the event loop, read by the thread: open a fresh connection.
        self._renew = False

    def start(self) -> None:
        self._thread.start()

    async def write(self, fn: Callable[[Db], T]) -> T:
        """Run ``fn(db)`` in the next batch; its result, or its exception."""
        write = _Write(fn=fn, token=trio.lowlevel.current_trio_token())
        self._queue.put(write)
        try:
            await write.done.wait()
        except trio.Cancelled:
            with self._lock:
                if write.state == _QUEUED:
                    write.state = _CANCELLED
                    raise
            # In the batch being committed: wait for the truth (bounded), so the
            # caller never believes a committed write failed.
            with trio.move_on_after(self._timeout + self._grace) as scope:
                scope.shield = True
                await write.done.wait()
            if write.result is None:
                raise
        if write.result is None:  # the writer stopped: aclose while queued
            raise StoreUnavailableError("the store is closed")
        value: T = write.result.unwrap()
        return value

    def renew_connection(self) -> None:
        """Open a fresh writer connection for the next batch.

        A connection that found its file read-only keeps refusing writes after
        the file is writable again; a new one sees the file as it is now.
        """
        self._renew = True

    def connection(self) -> sqlite3.Connection | None:
        """The writer connection (for tests that change its pragmas)."""
        return self._conn

    async def aclose(self) -> None:
        """Let the queued writes finish, stop the thread, close the connection."""
        self._queue.put(None)
        if self._thread.is_alive():
            with trio.move_on_after(self._timeout + self._grace) as scope:
                scope.shield = True
                await trio.to_thread.run_sync(self._thread.join, abandon_on_cancel=True)
        if not self._thread.is_alive() and self._conn is not None:
            self._conn.close()
            self._conn = None

    # -- the thread ---------------------------------------------------------------

    def _serve(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            batch: list[_Write] = []
            candidates = [first]
            while True:
                try:
                    candidates.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            with self._lock:
                for write in candidates:
                    if write is None:
                        stopping = True
                    elif write.state == _QUEUED:
                        write.state = _TAKEN
                        batch.append(write)
            if batch:
                self._commit(batch)
        # Anything queued after the stop: refused (aclose raced a caller).
        while True:
            try:
                write = self._queue.get_nowait()
            except queue.Empty:
                break
            if write is not None:
                _wake(write)

    def _commit(self, batch: list[_Write]) -> None:
        try:
            if self._renew:
                self._renew = False
                self._replace()
            conn = self._conn
            if conn is None:
                conn = self._conn = self._connect()
            deadline = time.monotonic() + self._timeout
            conn.set_progress_handler(lambda: time.monotonic() > deadline, _PROGRESS_STEPS)
            db = self._make_db(conn, self._guard)
            conn.execute("BEGIN IMMEDIATE")
            for write in batch:
                write.result = self._one(conn, db, write)
            conn.execute("COMMIT")
            self.batches += 1
        except Exception as error:
            self._rollback()
            if isinstance(error, sqlite3.Error):
                message = f"sqlite: {error}"
            else:
                logger.exception("sqlite writer: a write raised")
                message = "sqlite: the write failed"
            for write in batch:  # one exception each: each caller raises its own
                failure = StoreUnavailableError(message)
                failure.__cause__ = error
                write.result = outcome.Error(failure)
        finally:
            if self._conn is not None:
                self._conn.set_progress_handler(None, 0)
            for write in batch:
                _wake(write)

    @staticmethod
    def _one(conn: sqlite3.Connection, db: SavepointDb, write: _Write) -> outcome.Outcome[Any]:
        """One write of the batch; an answer (THREAD_BUSY…) undoes only its own changes.

        The savepoint opens just before the write's first change (``db`` does
        it); savepoints are never released, COMMIT ends them all at once.
        """
        db.savepoint_due, db.savepoint_open = True, False
        try:
            value = write.fn(db)
        except ProtocolError as answer:
            if db.savepoint_open:
                conn.execute("ROLLBACK TO w")
            return outcome.Error(answer)
        finally:
            db.savepoint_due = False
        return outcome.Value(value)

    def _replace(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(sqlite3.Error):
                conn.close()

    def _rollback(self) -> None:
        conn = self._conn
        if conn is None:
            return
        try:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        except sqlite3.Error:
            # A connection that cannot roll back is replaced for the next batch.
            conn.close()
            self._conn = None


def _wake(write: _Write) -> None:
    with contextlib.suppress(trio.RunFinishedError):  # the caller's run has ended
        write.token.run_sync_soon(write.done.set)
