"""The store's interface, and what every backend does the same way.

:class:`Store` holds the public methods. Each one is an *operation*: it is
timed and reported to the observer, bounded by the store's ``timeout``, and
turns every backend failure into ``StoreUnavailableError``. Backends
implement the ``_``-prefixed methods.
"""

from __future__ import annotations

import abc
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import trio

from server.protocol import FormatError, StoreUnavailableError, ThreadBusyError, ThreadNotFoundError

from ._records import (
    DeleteResult,
    EventRecord,
    Page,
    RunBegun,
    RunEnd,
    RunInfo,
    RunStart,
    StoredEvent,
    ThreadInfo,
)

T = TypeVar("T")

#: ``observer(op, ok, seconds)``: once per completed operation. ``ok`` is False
#: only for a store failure (``StoreUnavailableError``); an answer such as
#: THREAD_BUSY is a store that works. Operations cancelled from outside are
#: not reported.
StoreObserver = Callable[[str, bool, float], None]

#: The operation names the observer sees (for metrics pre-set to 0).
STORE_OPERATIONS: tuple[str, ...] = (
    "begin_run",
    "write_batch",
    "get_run",
    "read_events",
    "list_threads",
    "get_thread",
    "rename_thread",
    "delete_thread",
    "running_runs",
    "expire_threads",
    "ping",
    "migrate",
)

#: Default bound of one operation, in seconds (waiting for a connection included).
DEFAULT_TIMEOUT = 5.0

_ANSWERS = (ThreadBusyError, ThreadNotFoundError, FormatError)


#: Operations that write: one failing makes the store not ready until one succeeds.
WRITES = frozenset(
    {
        "begin_run",
        "write_batch",
        "rename_thread",
        "delete_thread",
        "expire_threads",
        "check_writes",
    }
)


class Store(abc.ABC):
    """The history store: threads, runs and their events.

    One instance per process, shared by every task; every method may be
    called concurrently. Use :func:`open_store` to get one.
    """

    #: The URL scheme, e.g. ``sqlite``.
    kind: str = ""

    def __init__(
        self,
        *,
        node_id: str,
        observer: StoreObserver | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.node_id = node_id
        self.timeout = timeout
        self._observer = observer
        #: False from a failed write until one succeeds (or :meth:`check_writes`
        #: does): a store that answers reads but refuses writes is not ready.
        self.writes_ok = True

    async def _op(self, name: str, call: Callable[[], Awaitable[T]]) -> T:
        started = time.perf_counter()
        ok = False
        try:
            with trio.fail_after(self.timeout):
                result = await call()
        except trio.TooSlowError:
            self._observe(name, False, started)
            raise StoreUnavailableError(
                f"the store did not answer within {self.timeout:g} s ({name})"
            ) from None
        except _ANSWERS:
            ok = True
            self._observe(name, True, started)
            raise
        except StoreUnavailableError:
            self._observe(name, False, started)
            raise
        ok = True
        self._observe(name, ok, started)
        return result

    def _observe(self, name: str, ok: bool, started: float) -> None:
        if name in WRITES:
            self.writes_ok = ok
        if self._observer is not None:
            self._observer(name, ok, time.perf_counter() - started)

    # -- runs ---------------------------------------------------------------------

    async def begin_run(self, start: RunStart, *, history_turns: int) -> RunBegun:
        """Record ``start`` as running, creating its thread if new, in one transaction.

        Raises ``ThreadNotFoundError`` if the thread is another user's,
        ``ThreadBusyError`` if it has a running run. Returns the thread and
        its last ``history_turns`` ended runs, oldest first.
        """
        return await self._op("begin_run", lambda: self._begin_run(start, history_turns))

    async def write_batch(
        self, events: Sequence[EventRecord], ends: Sequence[RunEnd] = ()
    ) -> list[bool]:
        """One transaction (a group commit): end runs, append events.

        Each end is a compare-and-set: it is recorded only if its run is
        still running (True), else nothing of that run is written (False).
        Events of other runs are written only while their run is running.
        Repeating a batch that was committed changes nothing and returns the
        same results (so a retry after a lost acknowledgement is safe).
        """
        if not events and not ends:
            return []
        return await self._op("write_batch", lambda: self._write_batch(events, ends))

    async def append_events(self, events: Sequence[EventRecord]) -> None:
        """Append events of running runs, in one transaction."""
        await self.write_batch(events)

    async def finish_run(self, end: RunEnd, events: Sequence[EventRecord] = ()) -> bool:
        """End a run with its remaining events (the final one last), if still running."""
        return (await self.write_batch(events, [end]))[0]

    async def get_run(self, user_id: str, run_id: str) -> RunInfo | None:
        """The latest run ``user_id`` named ``run_id``; None if there is none."""
        return await self._op("get_run", lambda: self._get_run(user_id, run_id))

    async def read_events(
        self, run_key: str, after_seq: int = 0, limit: int = 1000
    ) -> list[StoredEvent]:
        """Committed events of a run with ``seq > after_seq``, in order, at most ``limit``."""
        return await self._op("read_events", lambda: self._read_events(run_key, after_seq, limit))

    async def running_runs(self, node_id: str | None) -> list[RunInfo]:
        """Runs recorded as running (by ``node_id``, or by any node if None), oldest first."""
        return await self._op("running_runs", lambda: self._running_runs(node_id))

    # -- threads ------------------------------------------------------------------

    async def list_threads(
        self, user_id: str, *, limit: int = 20, cursor: str | None = None
    ) -> Page[ThreadInfo]:
        """A page of the user's threads, latest ``updated_at`` first."""
        return await self._op("list_threads", lambda: self._list_threads(user_id, limit, cursor))

    async def get_thread(
        self, user_id: str, thread_id: str, *, limit: int = 50, cursor: str | None = None
    ) -> tuple[ThreadInfo, Page[RunInfo]] | None:
        """The thread and a page of its runs (newest first); None if not the user's."""
        return await self._op(
            "get_thread", lambda: self._get_thread(user_id, thread_id, limit, cursor)
        )

    async def rename_thread(self, user_id: str, thread_id: str, title: str) -> ThreadInfo | None:
        """Set the thread's title; None if not the user's. Does not change ``updated_at``."""
        return await self._op(
            "rename_thread", lambda: self._rename_thread(user_id, thread_id, title.strip())
        )

    async def delete_thread(self, user_id: str, thread_id: str) -> DeleteResult:
        """Delete the thread with its runs and events, unless a run of it is in progress."""
        return await self._op("delete_thread", lambda: self._delete_thread(user_id, thread_id))

    async def expire_threads(self, updated_before_ms: int, batch_size: int) -> int:
        """Delete up to ``batch_size`` threads last updated before then (never a busy one)."""
        return await self._op(
            "expire_threads", lambda: self._expire_threads(updated_before_ms, batch_size)
        )

    # -- lifetime -----------------------------------------------------------------

    @abc.abstractmethod
    async def open(self, *, target_version: int) -> None:
        """Connect and apply the migrations up to ``target_version`` (``open_store`` calls it)."""

    async def ping(self) -> None:
        """Raise ``StoreUnavailableError`` unless the store answers a trivial query."""
        await self._op("ping", self._ping)

    async def check_writes(self) -> None:
        """Raise ``StoreUnavailableError`` unless the store takes a write (changing nothing)."""
        await self._op("check_writes", self._check_writes)

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Close every connection. Idempotent."""

    # -- backends -----------------------------------------------------------------

    @abc.abstractmethod
    async def _begin_run(self, start: RunStart, history_turns: int) -> RunBegun: ...

    @abc.abstractmethod
    async def _write_batch(
        self, events: Sequence[EventRecord], ends: Sequence[RunEnd]
    ) -> list[bool]: ...

    @abc.abstractmethod
    async def _get_run(self, user_id: str, run_id: str) -> RunInfo | None: ...

    @abc.abstractmethod
    async def _read_events(self, run_key: str, after_seq: int, limit: int) -> list[StoredEvent]: ...

    @abc.abstractmethod
    async def _running_runs(self, node_id: str | None) -> list[RunInfo]: ...

    @abc.abstractmethod
    async def _list_threads(
        self, user_id: str, limit: int, cursor: str | None
    ) -> Page[ThreadInfo]: ...

    @abc.abstractmethod
    async def _get_thread(
        self, user_id: str, thread_id: str, limit: int, cursor: str | None
    ) -> tuple[ThreadInfo, Page[RunInfo]] | None: ...

    @abc.abstractmethod
    async def _rename_thread(
        self, user_id: str, thread_id: str, title: str
    ) -> ThreadInfo | None: ...

    @abc.abstractmethod
    async def _delete_thread(self, user_id: str, thread_id: str) -> DeleteResult: ...

    @abc.abstractmethod
    async def _expire_threads(self, updated_before_ms: int, batch_size: int) -> int: ...

    @abc.abstractmethod
    async def _ping(self) -> None: ...

    async def _check_writes(self) -> None:
        await self._ping()
